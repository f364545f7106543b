#!/usr/bin/env python
"""Download (if needed), verify and preprocess a dataset into the canonical cache, outside training.

Runs exactly the code ``rails-train data=<name>`` runs (the dataset config's ``source``), without Hydra:

    python scripts/prepare_data.py ml_1m --root data                       # download + prepare
    python scripts/prepare_data.py ml_1m --root data --raw-dir ~/ml-1m     # already-extracted files
    python scripts/prepare_data.py amzn_books --raw-file ~/ratings_Books.csv --no-download
    python scripts/prepare_data.py ml_100k --root data --raw-dir ../shared/data/ml-100k --no-verify

Prints the statistics and the prepared directory; exits 1 with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from rails.datamodules.amazon import AmazonBooks
from rails.datamodules.download import DownloadError
from rails.datamodules.movielens import MovieLens1M, MovieLens20M, MovieLens100K
from rails.datamodules.preprocess import RawDatasetSource

SOURCES: dict[str, type[RawDatasetSource]] = {
    "ml_1m": MovieLens1M,
    "ml_20m": MovieLens20M,
    "ml_100k": MovieLens100K,
    "amzn_books": AmazonBooks,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dataset", choices=sorted(SOURCES), help="dataset config name (conf/data/<name>.yaml)"
    )
    parser.add_argument(
        "--root", default=os.environ.get("RAILS_DATA_DIR", "data"), help="data root (data.root)"
    )
    parser.add_argument("--raw-dir", help="already-downloaded raw folder (source.raw_dir)")
    parser.add_argument("--raw-file", help="Amazon Books only: path of ratings_Books.csv")
    parser.add_argument("--ratings-file", help="MovieLens only: explicit ratings file")
    parser.add_argument("--movies-file", help="MovieLens only: explicit movies file")
    parser.add_argument("--movies-separator", help="MovieLens only: separator of a re-saved movies file")
    parser.add_argument("--cache-dir", help="where the prepared directory goes (default: --root)")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    parser.add_argument("--no-verify", action="store_true", help="skip the published-statistics check")
    return parser.parse_args(argv)


def build_source(args: argparse.Namespace) -> RawDatasetSource:
    """The dataset source the arguments describe (same class and keys as the Hydra config)."""
    kwargs: dict[str, Any] = {
        "raw_dir": args.raw_dir,
        "cache_dir": args.cache_dir,
        "download": not args.no_download,
        "verify_statistics": not args.no_verify,
    }
    movielens_only = {"ratings_file": args.ratings_file, "movies_file": args.movies_file}
    movielens_only["movies_separator"] = args.movies_separator
    if args.dataset == "amzn_books":
        given = [f"--{k.replace('_', '-')}" for k, v in movielens_only.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to MovieLens datasets")
        kwargs["raw_file"] = args.raw_file
    else:
        if args.raw_file is not None:
            raise ValueError(
                "--raw-file only applies to amzn_books; use --raw-dir/--ratings-file for MovieLens"
            )
        kwargs.update(movielens_only)
    return SOURCES[args.dataset](**kwargs)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    try:
        directory = build_source(args).prepare(args.root)
    except (ValueError, FileNotFoundError, DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())

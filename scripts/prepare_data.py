#!/usr/bin/env python
"""Download (if needed), verify and preprocess a dataset into the canonical cache, outside training.

Runs exactly the code ``rails-train data=<name>`` runs: ``conf/data/<name>.yaml`` is composed with the
overrides, checked, and its ``source`` prepares the data under ``data.root``. Every dataset config works
(MovieLens, Amazon Books, the shared sequence copies ``ml_1m_seq``/``amazon_*``/``yelp``, S3-Rec's
``amazon_beauty_s3rec``, your own ``sequences``/``interactions`` files, BEIR ``qa_*``):

    python scripts/prepare_data.py ml_1m --root data                       # download + prepare
    python scripts/prepare_data.py ml_1m --root data --raw-dir ~/ml-1m     # already-extracted files
    python scripts/prepare_data.py amzn_books --raw-file ~/ratings_Books.csv --no-download
    python scripts/prepare_data.py ml_100k --root data --raw-dir ../shared/data/ml-100k --no-verify
    python scripts/prepare_data.py amazon_beauty_s3rec data.source.items_file=/x/Beauty.txt
    python scripts/prepare_data.py sequences data.source.items_file=/x/items.txt data.source.timestamps_file=/x/ts.txt
    python scripts/prepare_data.py interactions data.source.path=/x/log.csv data.source.columns.item=sku

The flags are shorthands for ``data.source.*`` overrides (``--raw-dir`` = ``data.source.raw_dir``, ...);
a flag the dataset's source does not take is an error. Prints the prepared directory; exits 1 with a one-line
message on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from rails.config import check_config, compose_config, config_dir
from rails.datamodules.download import DownloadError

# flag -> the data.source key it sets (--no-download / --no-verify set it to false)
FLAGS = {
    "no_download": "download",
    "no_verify": "verify_statistics",
    "raw_dir": "raw_dir",
    "raw_file": "raw_file",
    "ratings_file": "ratings_file",
    "movies_file": "movies_file",
    "movies_separator": "movies_separator",
    "cache_dir": "cache_dir",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    datasets = sorted(p.stem for p in (Path(config_dir()) / "data").glob("*.yaml"))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=datasets, help="dataset config name (conf/data/<name>.yaml)")
    parser.add_argument(
        "overrides", nargs="*", help="data.* overrides, e.g. data.source.items_file=/x/items.txt"
    )
    parser.add_argument(
        "--root", help="data root (data.root; default: paths.data_dir, i.e. $RAILS_DATA_DIR or data)"
    )
    parser.add_argument("--raw-dir", help="already-downloaded raw folder (data.source.raw_dir)")
    parser.add_argument("--raw-file", help="Amazon Books: path of ratings_Books.csv (data.source.raw_file)")
    parser.add_argument("--ratings-file", help="MovieLens: explicit ratings file (data.source.ratings_file)")
    parser.add_argument("--movies-file", help="MovieLens: explicit movies file (data.source.movies_file)")
    parser.add_argument("--movies-separator", help="MovieLens: separator of a re-saved movies file")
    parser.add_argument("--cache-dir", help="where the prepared directory goes (data.source.cache_dir)")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    parser.add_argument("--no-verify", action="store_true", help="skip the published-statistics check")
    return parser.parse_intermixed_args(argv)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The Hydra overrides the arguments stand for.

    Raises:
        ValueError: naming the flag when the dataset's source has no setting for it.
    """
    settings = {
        key: "false" if isinstance(getattr(args, flag), bool) else getattr(args, flag)
        for flag, key in FLAGS.items()
        if getattr(args, flag) not in (None, False)
    }
    source = compose_config("train", [f"data={args.dataset}"]).data.source
    for flag, key in FLAGS.items():
        if key in settings and key not in source:
            raise ValueError(
                f"--{flag.replace('_', '-')} does not apply to {args.dataset}: its source "
                f"{source.get('_target_')} has no {key} setting"
            )
    overrides = [f"data={args.dataset}"] + ([f"data.root={args.root}"] if args.root is not None else [])
    return (
        overrides + [f"data.source.{key}={value}" for key, value in settings.items()] + list(args.overrides)
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    try:
        data = compose_config("train", overrides_of(args)).data
        check_config(data, "data")
        directory = hydra.utils.instantiate(data.source).prepare(Path(data.root).expanduser())
    except (ValueError, FileNotFoundError, DownloadError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())

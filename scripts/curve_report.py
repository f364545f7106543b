"""Validation curves of screens side by side, finished or stopped before their test (``rails.results_screens``).

Each argument is a screen folder holding one folder per job, with the job's CSVLogger file: ``epochs.csv`` of a
finished run (``results/runs/<round>/<screen>/<job>/``) or ``metrics.csv`` of one stopped on the device
(``results/partial/<round>/<screen>/<job>/``, as ``ingest``-ed by hand from the round's partial.tar.gz). One row
per screen, labelled ``<round>:<screen>`` (the round: the last ``-`` part of the parent folder's name): the mean
best ``val/ndcg@10`` and ``val/hr@10`` at epochs ``<= --up-to`` (the same span for screens stopped at different
epochs), their ratio to ``--reference``, the mean ``val/ndcg@10`` at ``--epochs`` and the mean best epoch.
Printed, and written atomically with ``--out``.

    python scripts/curve_report.py results/partial/2026-12-02-h200-round26/* \\
        results/runs/2026-12-02-h200-round25/beauty_hstu_large_mol_d128_n2048_e61 --up-to 39 \\
        --reference round26:beauty_hstu_large_dot_d128_n2048_e61 --out docs/screens/2026-12-02-round26-partial.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rails.io import atomic_write
from rails.results_curves import Curve, read_epochs_csv
from rails.results_screens import curve_markdown, curve_rows


def read_screen(folder: Path) -> list[Curve]:
    """The curves of a screen folder's jobs (sorted by job folder).

    Raises:
        ValueError: naming the folder when no job folder in it has ``epochs.csv`` or ``metrics.csv``.
    """
    curves = []
    for job in sorted(p for p in folder.iterdir() if p.is_dir()):
        for name in ("epochs.csv", "metrics.csv"):
            if (job / name).is_file():
                record = job / "run.json"
                trained = json.loads(record.read_text()).get("epochs") if record.is_file() else None
                curves.append(read_epochs_csv(job / name, int(trained) if trained is not None else None))
                break
    if not curves:
        raise ValueError(f"{folder}: no job folder with epochs.csv or metrics.csv")
    return curves


def label(folder: Path) -> str:
    return f"{folder.resolve().parent.name.split('-')[-1]}:{folder.name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("screens", type=Path, nargs="+", help="screen folders (one job folder per seed)")
    parser.add_argument("--up-to", type=int, help="look for the best epoch at epochs <= this one")
    parser.add_argument("--epochs", type=int, nargs="+", default=[9, 19, 29, 39])
    parser.add_argument("--reference", help="the screen the ratios are taken to (<round>:<screen>)")
    parser.add_argument("--out", type=Path)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        rows = curve_rows([(label(f), read_screen(f)) for f in args.screens], args.epochs, args.up_to)
        table = curve_markdown(rows, args.reference, args.epochs)
    except (ValueError, KeyError, OSError) as error:
        print(f"curve_report: {error}", file=sys.stderr)
        return 2
    span = "every epoch reached" if args.up_to is None else f"epochs <= {args.up_to}"
    text = (
        f"# Validation curves: {', '.join(label(f) for f in args.screens)}\n\n"
        f"Written by `scripts/curve_report.py` (command: `python scripts/curve_report.py {' '.join(argv)}`). "
        f"Validation metrics only (mean over each screen's jobs); best values and epochs over {span}.\n\n{table}"
    )
    print(text, end="")
    if args.out:
        atomic_write(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

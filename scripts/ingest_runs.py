"""Copy the finished runs of a GPU round (``runs.tar.gz`` of ``scripts/gpu_sweep.sh``) into ``results/runs/``.

The archive holds ``runs/<sweep>/<job>/`` (metrics.json, run.json, .hydra/, the job log, epochs.csv) and, for
failed jobs, ``failed/<sweep>/<job>/error.txt``. Each finished job goes to ``<dest>/<sweep>/<job>/`` with the
round's sweep prefix stripped (``--strip-prefix r12_``: ``r12_beauty_bsarec_dot`` -> ``beauty_bsarec_dot``),
the directory layout ``scripts/make_results.py`` reads. An existing job directory is never overwritten (the
run is named and the command stops before copying anything; ``--force`` replaces them). Failed jobs are listed
with the first line of their error, not copied. Then: ``python scripts/make_results.py``.

    python scripts/ingest_runs.py /path/to/runs.tar.gz results/runs/2026-12-02-h200-round12 --strip-prefix r12_
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
from pathlib import Path


def _jobs(root: Path) -> list[Path]:
    """``root/<sweep>/<job>`` directories that hold a metrics.json."""
    return sorted(path.parent for path in root.glob("*/*/metrics.json"))


def _target(job: Path, root: Path, dest: Path, prefix: str) -> Path:
    sweep, name = job.relative_to(root).parts
    return dest / (sweep.removeprefix(prefix) if prefix else sweep) / name


def ingest(archive: Path, dest: Path, prefix: str = "", force: bool = False) -> tuple[list[Path], list[str]]:
    """Copy the archive's finished jobs under ``dest``; returns (their new directories, failed-job lines).

    Raises:
        FileNotFoundError: naming ``archive`` when it does not exist.
        FileExistsError: naming the first job directory that exists already (nothing copied), unless ``force``.
        ValueError: when the archive holds no ``runs/<sweep>/<job>/metrics.json``.
    """
    if not archive.is_file():
        raise FileNotFoundError(f"no archive at {archive}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # no absolute paths, links out or device files
        runs, failed_root = Path(tmp) / "runs", Path(tmp) / "failed"
        jobs = _jobs(runs)
        if not jobs:
            raise ValueError(f"{archive} holds no runs/<sweep>/<job>/metrics.json")
        targets = [_target(job, runs, dest, prefix) for job in jobs]
        existing = [target for target in targets if target.exists()]
        if existing and not force:
            raise FileExistsError(
                f"{existing[0]} exists already ({len(existing)} of {len(targets)} jobs): --force"
            )
        for job, target in zip(jobs, targets, strict=True):
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(job, target)
        failed = [
            f"{error.parent.relative_to(failed_root)}: {next(iter(error.read_text().splitlines()), '')[:200]}"
            for error in sorted(failed_root.glob("*/*/error.txt"))
        ]
    return targets, failed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", type=Path, help="runs.tar.gz of scripts/gpu_sweep.sh")
    parser.add_argument("dest", type=Path, help="e.g. results/runs/<date>-<kind>-<round>")
    parser.add_argument("--strip-prefix", default="", help="the round's sweep-name prefix, e.g. r12_")
    parser.add_argument("--force", action="store_true", help="replace job directories that exist")
    args = parser.parse_args()
    targets, failed = ingest(args.archive, args.dest, args.strip_prefix, args.force)
    print(f"{len(targets)} runs into {args.dest}: " + ", ".join(sorted({t.parent.name for t in targets})))
    for line in failed:
        print(f"failed (not copied): {line}")


if __name__ == "__main__":
    main()

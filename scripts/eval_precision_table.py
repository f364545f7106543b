"""Table of one checkpoint per head evaluated twice: float32 scores vs bf16 scores (scripts/ablations/eval_precision.sh).

Reads ``<work>/<head>/{fp32,bf16}/metrics.json`` (rails-eval of the same checkpoint, the second with
``+model_overrides.similarity.eval_autocast_bf16=true``) and writes ``<out>/eval_precision.{json,md}``.

    python scripts/eval_precision_table.py /tmp/rails-eval-precision-work --out /tmp/rails-eval-precision
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

METRICS = ("test/hr@10", "test/ndcg@10", "test/hr@50", "test/ndcg@50", "test/mrr")
MODES = ("fp32", "bf16")


def read_metrics(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read rails-eval metrics ({err})") from err
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}


def collect(work: Path) -> list[dict]:
    """One record per head directory holding both evaluations; heads with one missing are skipped, said."""
    rows = []
    for head in sorted(p for p in work.iterdir() if p.is_dir()):
        files = {mode: head / mode / "metrics.json" for mode in MODES}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            print(f"{head.name}: skipped, missing {', '.join(missing)}", file=sys.stderr)
            continue
        metrics = {mode: read_metrics(f) for mode, f in files.items()}
        keys = [k for k in METRICS if all(k in metrics[m] for m in MODES)]
        rows.append({"head": head.name, **{mode: {k: metrics[mode][k] for k in keys} for mode in MODES}})
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Evaluation precision: the same checkpoints ranked with float32 and with bf16 scores",
        "",
        f"Written by `{command}` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC). bf16: the head under bf16",
        "autocast at evaluation, as every MoL row before commit 9148e48; ties rank against the target.",
        "",
        "| head | metric | float32 | bf16 | bf16 / float32 |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        for key, full in row["fp32"].items():
            low = row["bf16"][key]
            ratio = f"{low / full:.3f}" if full else "n/a"
            lines.append(f"| `{row['head']}` | {key} | {full:.4f} | {low:.4f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="directory of <head>/{fp32,bf16}/metrics.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.work.is_dir():
        raise SystemExit(f"{args.work}: no such directory")
    rows = collect(args.work)
    if not rows:
        raise SystemExit(f"{args.work}: no head directory with both fp32/ and bf16/ metrics.json")
    command = "python scripts/eval_precision_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, command)
    (args.out / "eval_precision.json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=2) + "\n"
    )
    (args.out / "eval_precision.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

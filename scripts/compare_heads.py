"""HSTU + MoL vs HSTU + dot product, several seeds, on the embedded synthetic data and on ML-100K.

Every run is a separate ``python -m rails.train`` process (Hydra overrides below) writing its own run
directory; the script collects each run's ``metrics.json`` and writes ``docs/results.md`` with the mean ±
sample std of the test HR@10 / NDCG@10 (and HR@50, MRR), the per-seed values, the exact commands and the
device. Model selection uses a separate validation item (``data.holdout=2``) so the test item is never
seen while choosing the checkpoint.

Both heads use HSTU-large (ML-1M sizes: 8 blocks, 2 heads, 25/25, D 50) and the paper's head-specific
settings: dot product = L2-normalised encoder output + loss temperature 0.05; MoL 8x4x64 = LayerNorm
output, loss temperature 1.0, aux weights mi_loss 1e-3 and uid_embedding_l2_norm 0.1.

Examples:
    python scripts/compare_heads.py                                  # full comparison (GPU)
    python scripts/compare_heads.py --ml100k-dir data_shared/ml-100k # where the raw u.data/u.item live
    python scripts/compare_heads.py --quick --seeds 1 --datasets synthetic --output /tmp/results.md
    python scripts/compare_heads.py --oracle                         # Bayes ceiling of the synthetic data
    python scripts/compare_heads.py --oracle data.source.switch_prob=0.5  # ... under other generator settings

``--oracle`` replays :class:`rails.datamodules.synthetic.SyntheticSequences` (checking that the replay
reproduces every stored item) and ranks each user's test item by its exact generative probability given
the hidden state (interests, weights, current interest, chain positions): the HR@K / NDCG@K no model can
beat on average, plus how multi-modal the next-item distribution really is at prediction time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ML100K = REPO_ROOT.parent / "shared" / "data" / "ml-100k"

COMMON = [
    "model/encoder=hstu_large",
    "model.item_dim=50",
    "model.optimizer.weight_decay=1e-3",
    "model.negatives.num_negatives=128",
    "data.holdout=2",
    "data.batch_size=128",
    "~logger",
    "++callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]
HEADS = {
    "dot": ["model/similarity=dot", "model.loss.temperature=0.05", "model.encoder.output_norm=l2"],
    "mol": [
        "model/similarity=mol",
        "model.loss.temperature=1.0",
        "model.encoder.output_norm=layer_norm",
        "++model.aux_loss_weights={mi_loss: 0.001, uid_embedding_l2_norm: 0.1}",
    ],
}
# Full runs: enough epochs to converge on these small datasets (checkpoint chosen on val/ndcg@10).
DATASETS = {
    "synthetic": ["data=synthetic", "data.max_seq_len=50", "trainer.max_epochs=60"],
    "ml_100k": ["data=ml_100k", "data.max_seq_len=200", "trainer.max_epochs=100"],
}
# --quick: tiny shapes and one short epoch, to check the pipeline on CPU (numbers are meaningless).
QUICK = [
    "model.item_dim=16",
    "model.encoder.num_blocks=1",
    "model.encoder.qk_dim=8",
    "model.encoder.v_dim=8",
    "model.negatives.num_negatives=16",
    "model.similarity.component_dim=8",
    "model.similarity.query_hidden_dim=16",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
    "trainer.accelerator=cpu",
    "data.max_seq_len=20",
]
QUICK_DATA = {
    "synthetic": [
        "data.source.num_users=120",
        "data.source.num_items=200",
        "data.source.num_clusters=10",
        "data.source.min_length=8",
        "data.source.max_length=30",
    ],
    "ml_100k": [],
}
MOL_ONLY_QUICK = {"model.similarity.component_dim", "model.similarity.query_hidden_dim"}
METRICS = ("test/hr@10", "test/ndcg@10", "test/hr@50", "test/mrr")


def overrides_for(dataset: str, head: str, seed: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The Hydra overrides of one run."""
    items = [*COMMON, *DATASETS[dataset], *HEADS[head], f"seed={seed}", f"hydra.run.dir={run_dir}"]
    items.append(f"paths.data_dir={args.data_dir}")
    if dataset == "ml_100k":
        items += [f"data.source.raw_dir={args.ml100k_dir}", "data.source.download=false"]
    if args.quick:
        quick = [o for o in QUICK if head == "mol" or o.split("=")[0] not in MOL_ONLY_QUICK]
        items += quick + QUICK_DATA[dataset]
    return items + list(args.extra)


def run_one(overrides: list[str], log_path: Path) -> dict[str, float]:
    """Run ``python -m rails.train`` with ``overrides``; returns its metrics.json."""
    command = [sys.executable, "-m", "rails.train", *overrides]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        result = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise RuntimeError(f"run failed ({result.returncode}): {shlex.join(command)}\n{tail}")
    run_dir = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")))
    return json.loads((run_dir / "metrics.json").read_text())


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def render(
    results: dict, commands: list[str], args: argparse.Namespace, device: str, seeds: list[int]
) -> str:
    lines = [
        "# HSTU + MoL vs HSTU + dot product",
        "",
        f"Written by `scripts/compare_heads.py` on {dt.datetime.now().isoformat(timespec='seconds')}; "
        f"device: **{device}**; torch {torch.__version__}; seeds {seeds}"
        + ("; **QUICK MODE: tiny models, 2 batches, numbers are meaningless**" if args.quick else "")
        + ".",
        "",
        "Test metrics of the checkpoint with the best val/ndcg@10 (separate validation item, `data.holdout=2`),",
        "mean ± sample std over seeds. HSTU-large (8 blocks, 2 heads, 25/25, D 50), R = 128 uniform negatives.",
        "",
        "| dataset | head | HR@10 | NDCG@10 | HR@50 | MRR |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for dataset, per_head in results.items():
        for head, runs in per_head.items():
            cells = [mean_std([r[m] for r in runs]) for m in METRICS]
            lines.append(f"| {dataset} | {head} | " + " | ".join(cells) + " |")
        if {"dot", "mol"} <= per_head.keys():
            for metric in ("test/hr@10", "test/ndcg@10"):
                mol = statistics.fmean(r[metric] for r in per_head["mol"])
                dot = statistics.fmean(r[metric] for r in per_head["dot"])
                verdict = "MoL better" if mol > dot else "MoL NOT better"
                verdicts.append(
                    f"- {dataset} {metric}: MoL {mol:.4f} vs dot {dot:.4f} ({verdict}, {mol / dot - 1:+.1%})"
                )
    lines += ["", "## Verdict (means)", "", *verdicts, "", "## Per-seed test HR@10 / NDCG@10", ""]
    for dataset, per_head in results.items():
        for head, runs in per_head.items():
            values = ", ".join(f"{r['test/hr@10']:.4f} / {r['test/ndcg@10']:.4f}" for r in runs)
            lines.append(f"- {dataset} {head}: {values}")
    lines += ["", "## Commands", "", "```"]
    lines += [" ".join(["python", "scripts/compare_heads.py", *sys.argv[1:]]), "# which ran:"]
    lines += commands
    lines += ["```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ oracle
def _next_item_distribution(
    source, clusters: np.ndarray, item_probs: np.ndarray, state: dict
) -> dict[int, float]:
    """Exact P(next item | hidden state) of one generator step (mirrors ``SyntheticSequences.generate``)."""
    size = clusters.shape[1]
    interests, weights, current = state["interests"], state["weights"], state["current"]
    cluster_mass: dict[int, float] = {}
    stay = 1.0 if len(interests) == 1 else 1.0 - source.switch_prob
    cluster_mass[current] = stay
    if len(interests) > 1:
        others = [c for c in interests if c != current]
        other_w = np.array([weights[interests.index(c)] for c in others])
        for c, w in zip(others, other_w / other_w.sum(), strict=True):
            cluster_mass[c] = cluster_mass.get(c, 0.0) + source.switch_prob * float(w)
    resolved: dict[int, float] = {}
    for c, mass in cluster_mass.items():
        if state["consumed"][c] == size:
            open_ = [x for x in interests if state["consumed"][x] < size]
            for x in open_:
                resolved[x] = resolved.get(x, 0.0) + mass / len(open_)
        else:
            resolved[c] = resolved.get(c, 0.0) + mass
    dist: dict[int, float] = {}
    for c, mass in resolved.items():
        start_probs = item_probs * (1.0 - source.follow_prob if state["last_pos"][c] >= 0 else 1.0)
        if state["last_pos"][c] >= 0:
            start_probs = start_probs.copy()
            start_probs[(state["last_pos"][c] + 1) % size] += source.follow_prob
        for pos in np.flatnonzero(start_probs):
            p = pos
            while int(clusters[c, p]) in state["seen"]:
                p = (p + 1) % size
            item = int(clusters[c, p])
            dist[item] = dist.get(item, 0.0) + mass * float(start_probs[pos])
    return dist


def synthetic_oracle(
    source, ks: tuple[int, ...] = (10, 50)
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Bayes-optimal test metrics of the synthetic data (test item = last item) and multi-modality stats.

    Replays the generator's random stream; raises if the replay diverges from ``source.generate()``.
    Ties in the oracle ranking are broken pessimistically, as in the evaluator.

    Returns:
        (metrics, probs (U, num_items + 1) exact next-item probabilities at the test step,
        targets (U,) test items, seen (U, num_items + 1) bool, items consumed before the test step).
    """
    sequences, _ = source.generate()
    rng = np.random.default_rng(source.seed)
    size = source.num_items // source.num_clusters
    clusters = rng.permutation(np.arange(1, source.num_items + 1)).reshape(source.num_clusters, size)
    item_probs = np.arange(1, size + 1, dtype=np.float64) ** -source.zipf_exponent
    item_probs /= item_probs.sum()
    cluster_probs = np.arange(1, source.num_clusters + 1, dtype=np.float64) ** -source.zipf_exponent
    cluster_probs = rng.permutation(cluster_probs / cluster_probs.sum())
    sums = {f"hr@{k}": 0.0 for k in ks} | {f"ndcg@{k}": 0.0 for k in ks}
    sums |= {"mrr": 0.0, "p_target": 0.0, "modes_over_5pct": 0.0, "mass_outside_top_cluster": 0.0}
    probs = np.zeros((len(sequences), source.num_items + 1))
    targets = np.zeros(len(sequences), dtype=np.int64)
    seen = np.zeros_like(probs, dtype=bool)
    for user, stored in enumerate(sequences["item_ids"]):
        k = int(rng.integers(source.interests_min, source.interests_max + 1))
        interests = [int(c) for c in rng.choice(source.num_clusters, size=k, replace=False, p=cluster_probs)]
        weights = rng.dirichlet(np.full(k, source.interest_concentration))
        length = int(rng.integers(source.min_length, source.max_length + 1))
        state = {
            "interests": interests,
            "weights": weights,
            "seen": set(),
            "last_pos": dict.fromkeys(interests, -1),
            "consumed": dict.fromkeys(interests, 0),
        }
        rng.uniform(946684800, 1262304000)
        state["current"] = int(rng.choice(interests, p=weights))
        dist: dict[int, float] = {}
        for step in range(length):
            if step == length - 1:
                dist = _next_item_distribution(source, clusters, item_probs, state)
            current = state["current"]
            if step > 0 and k > 1 and rng.random() < source.switch_prob:
                others = [c for c in interests if c != current]
                other_w = np.array([weights[interests.index(c)] for c in others])
                current = int(rng.choice(others, p=other_w / other_w.sum()))
                rng.exponential(source.session_gap_seconds)
            elif step > 0:
                rng.exponential(source.gap_seconds)
            if state["consumed"][current] == size:
                open_ = [c for c in interests if state["consumed"][c] < size]
                current = open_[int(rng.integers(len(open_)))]
            follow = state["last_pos"][current] >= 0 and rng.random() < source.follow_prob
            pos = (state["last_pos"][current] + 1) % size if follow else int(rng.choice(size, p=item_probs))
            while int(clusters[current, pos]) in state["seen"]:
                pos = (pos + 1) % size
                follow = False
            item = int(clusters[current, pos])
            if item != int(stored[step]):
                raise RuntimeError(
                    "oracle replay diverged from SyntheticSequences.generate(): update the replay"
                )
            state["seen"].add(item)
            state["consumed"][current] += 1
            state["last_pos"][current] = pos
            state["current"] = current
            rng.integers(4, 6) if follow else rng.integers(1, 6)
        target = int(stored[-1])
        p_target = dist.get(target, 0.0)
        # pessimistic ties: every item at least as likely as the target (the target included) ranks ahead
        rank = sum(1 for p in dist.values() if p >= p_target) if p_target > 0 else float("inf")
        for kk in ks:
            if rank <= kk:
                sums[f"hr@{kk}"] += 1.0
                sums[f"ndcg@{kk}"] += 1.0 / float(np.log2(rank + 1))
        sums["mrr"] += 1.0 / rank
        sums["p_target"] += p_target
        by_cluster: dict[int, float] = {}
        item_cluster = {int(x): c for c in interests for x in clusters[c]}
        for item, p in dist.items():
            by_cluster[item_cluster[item]] = by_cluster.get(item_cluster[item], 0.0) + p
        sums["modes_over_5pct"] += sum(1 for p in by_cluster.values() if p > 0.05)
        sums["mass_outside_top_cluster"] += 1.0 - max(by_cluster.values())
        probs[user, list(dist)] = list(dist.values())
        targets[user] = target
        seen[user, list(state["seen"] - {target})] = True
    return {key: value / len(sequences) for key, value in sums.items()}, probs, targets, seen


def head_capacity(
    probs: np.ndarray, targets: np.ndarray, seen: np.ndarray, head: str, dim: int, steps: int, seed: int = 0
) -> float:
    """Test HR@10 of a head fitted directly to the oracle next-item distributions (a perfect encoder).

    Every user gets a free (D,) query vector; items a (D,) embedding; the head (``dot``: L2-normalised
    cosine / 0.05; ``mol``: MoL 8x4x64 without user-id components on LayerNorm-ed queries, paper
    settings otherwise) is trained with full-softmax cross-entropy against the exact distributions
    (seen items masked), so only the head's capacity to represent the Bayes-optimal ranking is measured.
    Returns the best HR@10 of the test targets over the fit (pessimistic ties, seen items excluded).
    """
    from rails.models.similarity import DotProductSimilarity, MoLSimilarity

    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_users, num_items = probs.shape
    queries = torch.nn.Parameter(
        torch.randn(num_users, dim, device=device) * 0.02
    )  # small: Adam moves it fast
    items = torch.nn.Parameter(torch.randn(num_items - 1, dim, device=device) * 0.02)
    if head == "dot":
        similarity: torch.nn.Module = DotProductSimilarity()
        temperature, prepare = 0.05, (lambda q: q)
    else:
        similarity = MoLSimilarity(query_dim=dim, item_dim=dim, uid_hash_sizes=[])
        temperature, prepare = 1.0, (lambda q: torch.nn.functional.layer_norm(q, (dim,)))
    similarity.to(device)
    params = [queries, items, *similarity.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.98))
    target_p = torch.as_tensor(probs[:, 1:], dtype=torch.float32, device=device)
    mask = torch.as_tensor(seen[:, 1:], device=device)
    target_cols = torch.as_tensor(targets - 1, device=device)
    batch, best = min(250, num_users), 0.0
    for step in range(steps):
        similarity.train()
        rows = torch.randint(num_users, (batch,), device=device)
        scores = similarity(prepare(queries[rows]), items).scores / temperature
        log_q = torch.log_softmax(scores.masked_fill(mask[rows], -1e4), dim=-1)
        loss = -(target_p[rows] * log_q).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % max(steps // 10, 1) == 0:
            similarity.eval()
            with torch.no_grad():
                hits = 0
                for start in range(0, num_users, batch):
                    sl = slice(start, start + batch)
                    s_all = similarity(prepare(queries[sl]), items).scores.masked_fill(
                        mask[sl], -float("inf")
                    )
                    t = s_all.gather(1, target_cols[sl, None])
                    hits += int(((s_all >= t).sum(1) <= 10).sum())
            best = max(best, hits / num_users)
            print(
                f"  {head} D={dim} step {step + 1}: loss {loss.item():.4f} test hr@10 {hits / num_users:.4f}"
            )
    return best


def oracle_main(
    extra: list[str], capacity_dims: list[int], capacity_steps: int, capacity_users: int | None = None
) -> None:
    """Print the synthetic oracle for ``conf/data/synthetic.yaml`` plus ``data.source.*`` overrides,
    then :func:`head_capacity` of both heads for each width in ``capacity_dims``."""
    import yaml  # PyYAML (a transformers dependency): works where omegaconf is not installed

    from rails.datamodules.synthetic import SyntheticSequences

    settings = dict(yaml.safe_load((REPO_ROOT / "conf" / "data" / "synthetic.yaml").read_text())["source"])
    settings.pop("_target_")
    for item in extra:
        key, _, value = item.partition("=")
        if not key.startswith("data.source."):
            raise ValueError(f"--oracle only takes data.source.* overrides, got {item!r}")
        name = key.removeprefix("data.source.")
        if name not in settings:
            raise ValueError(f"unknown synthetic setting {key!r}; known: {sorted(settings)}")
        settings[name] = type(settings[name])(float(value))
    metrics, probs, targets, seen = synthetic_oracle(SyntheticSequences(**settings))
    print(
        json.dumps({"settings": settings, "oracle": {k: round(v, 4) for k, v in metrics.items()}}), flush=True
    )
    capacity = {}
    probs, targets, seen = probs[:capacity_users], targets[:capacity_users], seen[:capacity_users]
    for dim in capacity_dims:
        for head in ("dot", "mol"):
            capacity[f"{head}_D{dim}"] = round(
                head_capacity(probs, targets, seen, head, dim, capacity_steps), 4
            )
    if capacity:
        print(json.dumps({"head_capacity_best_test_hr@10": capacity}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny models, 2 batches: a CPU pipeline check")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument(
        "--ml100k-dir", type=Path, default=DEFAULT_ML100K, help="folder with u.data and u.item"
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data", help="prepared-dataset cache")
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "logs" / "compare_heads")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "results.md")
    parser.add_argument(
        "--oracle", action="store_true", help="print the Bayes ceiling of the synthetic data and exit"
    )
    parser.add_argument(
        "--capacity-dims",
        type=int,
        nargs="*",
        default=[],
        help="with --oracle: head-capacity fits at these D",
    )
    parser.add_argument("--capacity-steps", type=int, default=400, help="with --oracle: fit steps per head")
    parser.add_argument(
        "--capacity-users", type=int, default=None, help="with --oracle: fit the first N users"
    )
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides applied to every run")
    args = parser.parse_args()
    if args.oracle:
        oracle_main(args.extra, args.capacity_dims, args.capacity_steps, args.capacity_users)
        return
    if "ml_100k" in args.datasets and not (args.ml100k_dir / "u.data").is_file():
        parser.error(f"--ml100k-dir {args.ml100k_dir} has no u.data (needed for the ml_100k runs)")
    args.ml100k_dir = args.ml100k_dir.resolve()
    args.data_dir = args.data_dir.resolve()
    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    commands = []
    for dataset in args.datasets:
        for head in args.heads:
            for seed in args.seeds:
                run_dir = (args.runs_dir / stamp / f"{dataset}_{head}_seed{seed}").resolve()
                overrides = overrides_for(dataset, head, seed, args, run_dir)
                commands.append(shlex.join(["python", "-m", "rails.train", *overrides]))
                print(f"[{dataset} {head} seed {seed}] {run_dir}", flush=True)
                metrics = run_one(overrides, run_dir / "stdout.log")
                results.setdefault(dataset, {}).setdefault(head, []).append(metrics)
                print("   " + ", ".join(f"{m} {metrics[m]:.4f}" for m in METRICS), flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.quick else "cpu"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results, commands, args, device, args.seeds))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

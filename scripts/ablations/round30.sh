#!/usr/bin/env bash
# GPU round 30 (after round 29), on one H200 (kind nvidia-h200), calls chained within 30 s:
#
#   start : Round 29 (docs/mol_investigation.md §0.20) measured the averaged dot head (.1015 / .0583, 3 seeds) and left
#           Beauty's MoL preset (experiment=amazon_beauty_hstu_large_mol_tuned: .1039 / .0603) at 98.7 % of BSARec's
#           published NDCG@10 (.0611): a longer average and 4,096 negatives were flat. The settings untried so far are
#           the encoder's: the preset widened the items to 128 but its attention is still 8 heads x 8 dims (64).
#           Five trainings at once (Beauty 61 epochs fp32, ML-1M 101 epochs as its preset), seed 1 each:
#           - Beauty MoL preset with attention as wide as the items (qk_dim = v_dim = 16: 8 x 16 = 128);
#           - Beauty MoL preset with item_dim 256 (128 lifted both heads over 64, §0.16);
#           - Beauty MoL preset at twice the learning rate (2e-3: the average smooths a faster walk);
#           - ML-1M MoL preset (experiment=ml_1m_seq_hstu_large_mol_tuned, .3236 / .1856 over 3 seeds, §0.15) with the
#             weight average at decay 0.999 (~21 of its 47-step epochs) and at 0.995 (~4 epochs): issue #12's ML-1M
#             rows have had no average yet, and on Beauty it gave MoL +3.3 % / +4.0 % (§0.19).
#           A Beauty screen that beats round 27's seed-1 validation NDCG@10 (.0675) by more than .0003, or an ML-1M
#           screen above .3236 / .1856 by more than a seed's spread, gets seeds 2-3 next round. Their best checkpoints
#           (the first Beauty and the decay-0.999 ML-1M screen, stripped) come back in ckpts.tar.gz: the trained-model
#           problems of the top-k benchmark (`round20.sh topk .devdata/ckpts/r30_*/0.ckpt`, issue #13).
#   go    : `start` and `wait 520` in one call (round_steps.sh).
#   wait  : `wait 560` until "sweeps still running: 0" (the last wait runs `usage`).
#   cosine: after the last wait (~2 min): the blend weights above on the Beauty screens' checkpoints (val and test;
#           a weight is chosen on validation), $OUT/cosine_eval.json.
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/{amazon-beauty,ml-1m-seq,ml-1m-meta} (../shared/data)
#   run(kind="nvidia-h200", carry=[".whl", ".devdata/amazon-beauty", ".devdata/ml-1m-seq", ".devdata/ml-1m-meta"],
#   command="bash scripts/ablations/round30.sh go"): start and the first wait in one call, so that a slow reply cannot
#   let the machine go between them; then `bash scripts/ablations/round30.sh wait 560` until "sweeps still running: 0".
#
# Here afterwards: `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round30
# --strip-prefix r30_`, scripts/make_results.py, `python scripts/screen_report.py results/runs/<date>-<kind>-round30
# --only beauty --epochs 9 19 29 39 59 --out docs/screens/<date>-round30-beauty.md` (and `--only ml1m --epochs 19 49 99`),
# scripts/cosine_eval_report.py over <files_at>/cosine_eval.json -> results/studies/<date>-<kind>-round30-cosine.*,
# the reading into docs/mol_investigation.md (§0.21), mol_pair_usage.* -> results/studies/<date>-<kind>-round30-*.
ROUND=r30
export COLLECT_CKPT=${COLLECT_CKPT:-1}
export COLLECT_CKPT_GLOB=${COLLECT_CKPT_GLOB:-'r30_@(beauty_mol_tuned_qkv16|ml1m_mol_tuned_ema999)/0'}
# `cosine` after the last wait: the Beauty MoL screens' best checkpoints ranked by MoL + w * the cosine for w in
# 0 (MoL alone), 0.5, 1 (as trained and selected), 2 and the cosine alone: is the blend's weight a training-free lever?
export COSINE_SWEEPS=${COSINE_SWEEPS:-'r30_beauty_mol_tuned_*'}
export BLENDS=${BLENDS:-'mol:1.0:0.0 cosine:0.0:1.0 mol+cosine:1.0:1.0 mol+0.5cosine:1.0:0.5 mol+2cosine:1.0:2.0'}
EPOCHS=${EPOCHS:-61}
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the encoder's width and learning rate under Beauty's MoL preset; the weight average on ML-1M
  local beauty=(experiment=amazon_beauty_hstu_large_mol_tuned) ml1m=(experiment=ml_1m_seq_hstu_large_mol_tuned)
  local ema=(callbacks/weight_averaging=ema)
  screen beauty_mol_tuned_qkv16 "${beauty[@]}" model.encoder.qk_dim=16 model.encoder.v_dim=16
  screen beauty_mol_tuned_d256 "${beauty[@]}" model.item_dim=256
  screen beauty_mol_tuned_lr2e-3 "${beauty[@]}" model.optimizer.lr=2e-3
  EPOCHS=101 screen ml1m_mol_tuned_ema999 "${ml1m[@]}" "${ema[@]}"
  EPOCHS=101 screen ml1m_mol_tuned_ema995 "${ml1m[@]}" "${ema[@]}" callbacks.weight_averaging.decay=0.995
  return 0
}

round_main "$@"

#!/usr/bin/env bash
# GPU round 12 (after round 11), on one H200 (kind nvidia-h200) or two (nvidia-h200-x2), calls chained within 30 s:
#
#   bench   : alone on the machine: bench_mol_step (dot / MoL / fused MoL / bf16 MoL head / compiled MoL head,
#             each eager and replayed from one CUDA graph ("captured": the step without launch overhead); the
#             step no longer synchronises with the host and gathers each pair's item side once;
#             $OUT/bench_mol.*, <= 9 min).
#   start   : seventeen Amazon Beauty trainings (issue #12 deliverable 4; seed 1, 101 epochs, S3-Rec protocol,
#             through MPS), detached on the last GPU. Round 11 left SASRec + MoL (.0763) below SASRec + dot (.0864)
#             with a higher training loss, and the best model (HSTU-large + dot, timestamps, .0920 / .0508) under
#             the published best (.1008 / .0611). The trainings: round 11's SASRec + MoL at 101 epochs (the
#             control of the MoL screens), the MoL head's regularisation and precision one change each (bf16
#             autocast off, item / softmax dropout 0, encoder dropout 0.3, half the learning rate, cosine decay),
#             HSTU-large + MoL (preset), HSTU-large
#             + dot (fp32, dropout 0.3, full softmax), the BSARec-style encoder (dot with cross-entropy over every
#             item = the published recipe, dot and MoL with 512 negatives), position embeddings counted from the
#             newest item (`position_alignment=right`, the left-padded layout of the code behind the published
#             Beauty numbers) for SASRec + dot, SASRec + MoL and HSTU-large + dot, and SASRec with the
#             S3-Rec-family recipe (raw dot, full CE).
#             With two GPUs, GPU 0 meanwhile runs the `profile` step.
#   profile : the two-pass GPU test and scripts/profile_fused_exact.py at 1M and 10M items (B = 32, 8x4x64: the
#             one-pass kernel's stage ablations beside the two-pass search, thresholds from every 64th item and
#             candidate emission instead of the on-chip merge; <= 7 min, $OUT/profile_fused_exact_{1M,10M}.*).
#             One GPU: after the trainings (timings alone on the GPU).
#   wait    : waits at most ${2:-560} s, brings back the finished runs (runs.tar.gz, partial.tar.gz,
#             sweep_logs.tar.gz) and, after `topk`, bench_topk.{json,md,png} (partial while running). Repeat until
#             done.
#   topk    : a session of its own (~25 min, any kind): the two MoL checkpoints of the top-k benchmark (ML-1M
#             HSTU-large + MoL, Beauty SASRec + MoL; retrained side by side on GPU 0 unless this machine has them),
#             then the full bench_topk (1M / 10M / 100M, both shapes, four fused exact rows per problem, two
#             replayed ClusteredTopK points at 100M) with them, detached: `wait 560` until it is done. Worth
#             it once the `profile` step shows a faster exact search (two-pass) to put on record.
#
#   here first: .whl/ (scripts/gpu_wheels.sh), .devdata/ with ml-1m-seq and amazon-beauty (../shared/data)
#   two GPUs: run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/round12.sh bench"),
#             then `start` (trainings on GPU 1, profile on GPU 0), then `wait 560` until "sweeps still running: 0"
#   one GPU:  run(kind="nvidia-h200", carry=[".whl", ".devdata"], command="bash scripts/ablations/round12.sh start"),
#             `wait 560` until "sweeps still running: 0" (~20 min), then `bench`, then `profile` (the trainings
#             first: issue #12 matters most; each call stays under the device's 10-minute limit)
#
# Here afterwards: bench_mol.* -> docs/ and results/bench_mol/<date>-<kind>-<commit>.* (its headline row in
# docs/benchmarks.md); profile_fused_exact_* -> results/profiles/<date>-<kind>-fused-exact-{1M,10M}.*; bench_topk.*
# -> docs/ (the Top-k headline in docs/benchmarks.md; if the two-pass rows win, make fused_sample_stride=None the
# ExactTopK default); `python scripts/ingest_runs.py <files_at>/runs.tar.gz results/runs/<date>-<kind>-round12
# --strip-prefix r12_`,
# scripts/make_results.py, the Beauty screens into docs/mol_investigation.md, and the best settings to 3 seeds.
ROUND=r12
# shellcheck source=round_steps.sh
source "$(dirname "$0")/round_steps.sh"

trainings() {  # the Beauty screens (and, with two GPUs, the ML-1M MoL checkpoint), detached on $TRAIN_GPU
  # round 11's SASRec + MoL (Books head 8x8x32, item dropout 0.3: .0763 / .0420 at 201 epochs), 101 epochs: the
  # control of the one-change screens below, and the Beauty checkpoint of the top-k benchmark
  sasrec_mol=(experiment=amazon_beauty_sasrec_mol model.similarity.item_dropout=0.3)
  screen beauty_sasrec_mol "${sasrec_mol[@]}"
  screen beauty_sasrec_mol_fp32 "${sasrec_mol[@]}" model.similarity.autocast_bf16=false
  screen beauty_sasrec_mol_no_dropout "${sasrec_mol[@]}" model.similarity.item_dropout=0.0 \
    model.similarity.softmax_dropout=0.0
  screen beauty_sasrec_mol_enc_dropout_0.3 "${sasrec_mol[@]}" model.encoder.dropout=0.3
  screen beauty_sasrec_mol_right "${sasrec_mol[@]}" model.encoder.position_alignment=right
  # optimisation: round 11's MoL led the dot product for ~10 epochs, then stalled lower with a higher training
  # loss; half the learning rate, and a cosine decay to 0 over the 101 epochs (175 steps each)
  screen beauty_sasrec_mol_lr5e-4 "${sasrec_mol[@]}" model.optimizer.lr=5e-4
  screen beauty_sasrec_mol_cosine "${sasrec_mol[@]}" \
    'model.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: 17700}'
  screen beauty_sasrec_dot_right experiment=amazon_beauty_sasrec_dot model.encoder.position_alignment=right
  # the recipe of the S3-Rec-family code behind the published Beauty rows (BSARec's released log: 2 blocks,
  # 1 head, FFN 4 x 64, dropout 0.5, cross-entropy over every item on raw dot products, lr 5e-4, batch 256,
  # left-padded = right-aligned positions), on rails' SASRec
  screen beauty_sasrec_dot_s3rec_recipe experiment=amazon_beauty_sasrec_dot model.encoder.num_blocks=2 \
    model.encoder.num_heads=1 model.encoder.ffn_hidden_dim=256 model/negatives=full_softmax \
    model.negatives.num_negatives=null model.similarity.normalize=false model.similarity.loss_temperature=1.0 \
    model.similarity.query_norm=none model.optimizer.lr=5e-4 data.batch_size=256 model.encoder.position_alignment=right
  screen beauty_hstu_large_mol experiment=amazon_beauty_hstu_large_mol
  large_dot=experiment=amazon_beauty_hstu_large_dot
  screen beauty_hstu_large_dot_fp32 $large_dot trainer.precision=32-true
  screen beauty_hstu_large_dot_dropout_0.3 $large_dot model.encoder.dropout=0.3 model.encoder.linear_dropout=0.3
  screen beauty_hstu_large_dot_full $large_dot model/negatives=full_softmax model.negatives.num_negatives=null
  # the BSARec-style encoder (not causal: one example per training target), the published best on Beauty
  screen beauty_bsarec_dot experiment=amazon_beauty_bsarec_dot
  screen beauty_bsarec_dot_512 experiment=amazon_beauty_bsarec_dot model/negatives=uniform \
    model.negatives.num_negatives=512
  screen beauty_bsarec_mol experiment=amazon_beauty_bsarec_mol
  screen beauty_hstu_large_dot_right $large_dot model.encoder.position_alignment=right
}

if [ "${1:-}" = topk ]; then
  # a session of its own (~25 min): this round's two MoL checkpoints (retrained on GPU 0 when this machine has
  # none: the ML-1M HSTU-large + MoL of round 7's best setting and the Beauty SASRec + MoL control, 101 epochs,
  # side by side), then the full top-k benchmark with them as its trained-model problems (detached; `wait`)
  for pair in "beauty_sasrec_mol experiment=amazon_beauty_sasrec_mol" \
    "ml1m_hstu_large_mol experiment=ml_1m_seq_hstu_large_mol"; do
    name=${pair%% *}
    if [ -z "$(best_checkpoint "r12_$name")" ]; then
      CUDA_VISIBLE_DEVICES=0 bash scripts/gpu_sweep.sh start "r12_$name" hydra/launcher=parallel \
        hydra.launcher.n_jobs=1 "${pair#* }" model.similarity.item_dropout=0.3 "${common[@]}" seed=1 trainer.max_epochs=101
    fi
  done
  start_topk_bench_after r12_ml1m_hstu_large_mol r12_beauty_sasrec_mol
  exit 0
fi
round_main "$@"

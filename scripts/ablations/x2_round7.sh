#!/usr/bin/env bash
# Next GPU round on one two-GPU machine (kind nvidia-h200-x2), one device call per part, each under 10 minutes:
#
#   bench  : the GPU suite on GPU 1 (background) beside the training-step benchmark on GPU 0 (eager vs a
#            torch.compile'd encoder + fused AdamW, and that in CUDA graphs; dot, MoL; fp32, bf16);
#            writes $OUT/{gpu_tests.log,bench_mol.*} (the JSON after every row).
#   topk_seeds: bench_topk on GPU 0 beside 6 ML-1M trainings on GPU 1 (missing seeds, holdout=2), collected.
#   topk   : the HSTU attention benchmark re-measured ($OUT/bench_hstu.*, time-boxed) and the exact/approximate
#            MoL top-k benchmark at 1M and 10M items ($OUT/bench_topk.*).
#   ddp    : the issue #14 two-GPU check with the compiled encoder and fused AdamW (scripts/launch_ddp_check.sh).
#   sweeps : 3-seed confirmations with the faster step (started in the background; collect with
#            `bash scripts/ablations/x2_round7.sh wait SECONDS` in the following calls).
#   gap    : the HSTU-gap jobs round 3 stopped (attention kernel, fp32, separate validation item), background.
#   beauty : six one-seed Beauty screens (why MoL trails the dot product there) and HSTU-large with real
#            timestamps vs positions, also in the background.
#   wait   : `gpu_sweep.sh wait` that also brings back one trained MoL checkpoint (r7_mol seed 1, ~12 MB with
#            its optimizer state; the device returns at most 16 MiB per file) as ckpts.tar.gz.
#   trained: bench_topk on that checkpoint (unpacked into .devdata/ckpts/), queried by its test users.
#
#   run(kind="nvidia-h200-x2", carry=[".whl", ".devdata"], command="bash scripts/ablations/x2_round7.sh bench")
#   run(command="bash scripts/ablations/x2_round7.sh ddp")            (within 30 s of the previous call)
#   run(command="bash scripts/ablations/x2_round7.sh topk")
#   run(command="bash scripts/ablations/x2_round7.sh sweeps && bash scripts/ablations/x2_round7.sh wait 500")
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/rails-round7}
mkdir -p "$OUT"
# shellcheck source=../device_site.sh
source scripts/device_site.sh
device_env
# The compiled step: encoder under torch.compile, AdamW's fused kernels; for MoL heads also the mixing.
FAST=(model.compile_encoder=true model.optimizer.fused=true)
MOL_FAST=(model.similarity.compile_mixing=true)

case "${1:-}" in
  bench)
    # GPU 1: the suite, then the HSTU attention benchmark (docs/bench_hstu.* predate the kernel refactor)
    (CUDA_VISIBLE_DEVICES=1 OUT=/tmp/rails-gpu-tests bash scripts/device_gpu_tests.sh >/tmp/rails-gpu-tests.out 2>&1
      CUDA_VISIBLE_DEVICES=1 timeout 200 python3 scripts/bench_hstu.py --max-seconds 170 --out "$OUT/bench_hstu" \
        >/tmp/rails-bench-hstu.out 2>&1) &
    tests=$!
    # the JSON/markdown are rewritten after every row, so a cut run keeps what finished
    CUDA_VISIBLE_DEVICES=0 timeout 420 python3 scripts/bench_mol_step.py --count-ops --heads dot mol \
      --variants eager compiled graphs --output "$OUT/bench_mol.md" 2>&1 | grep -v "^USDT" | tail -n 16
    wait "$tests"
    cp /tmp/rails-gpu-tests/gpu_tests.log "$OUT/" 2>/dev/null
    tail -n 8 "$OUT/gpu_tests.log"
    tail -n 6 /tmp/rails-bench-hstu.out
    ;;
  topk_seeds)
    # GPU 0: the top-k benchmark alone; GPU 1: the ML-1M table's missing seeds and the data.holdout=2 rows of
    # issue #12 deliverable 2, all at once (6 jobs, MPS), collected at the end of the call.
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1}
    common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false "${FAST[@]}")
    sweep() { local name=$1; shift; CUDA_VISIBLE_DEVICES=1 bash scripts/gpu_sweep.sh start "$name" \
      hydra/launcher=parallel "$@" "${common[@]}"; }
    sweep r7_hstu_seeds hydra.launcher.n_jobs=2 experiment=ml_1m_seq_hstu_dot seed=2,3
    sweep r7_sasrec_mol_seeds hydra.launcher.n_jobs=2 experiment=ml_1m_seq_sasrec_mol seed=2,3 "${MOL_FAST[@]}"
    sweep r7_holdout2_dot hydra.launcher.n_jobs=1 experiment=ml_1m_seq_hstu_large_dot data.holdout=2 seed=1
    sweep r7_holdout2_mol hydra.launcher.n_jobs=1 experiment=ml_1m_seq_hstu_large_mol data.holdout=2 seed=1 \
      "${MOL_FAST[@]}"
    CUDA_VISIBLE_DEVICES=0 timeout 380 python3 scripts/bench_topk.py --items 1000000 10000000 \
      --settings 8x4x64 8x8x32 --batch-sizes 1 32 256 --runs 10 --warmup 2 --time-budget-s 1.5 \
      --truth-queries 64 --no-faiss --out "$OUT" 2>&1 | tail -n 24
    bash scripts/gpu_sweep.sh wait "${2:-150}"
    ;;
  topk)
    # docs/bench_hstu.* predate the HSTU kernel refactor (tile helpers): re-measured here, time-boxed
    timeout 170 python3 scripts/bench_hstu.py --max-seconds 140 --out "$OUT/bench_hstu" 2>&1 | tail -n 8
    timeout 380 python3 scripts/bench_topk.py --items 1000000 10000000 --settings 8x4x64 8x8x32 \
      --batch-sizes 1 32 256 --runs 10 --warmup 2 --time-budget-s 1.5 --truth-queries 64 --no-faiss \
      --out "$OUT" 2>&1 | tail -n 24
    ;;
  ddp)
    OUT=$OUT BUDGET_S=500 bash scripts/launch_ddp_check.sh "${FAST[@]}" >"$OUT/ddp_stdout.txt" 2>&1
    echo "ddp rc $?"
    grep -E "speed-up|Acceptance" "$OUT/ddp_stdout.txt" | tail -n 4
    ;;
  sweeps)
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1}
    common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false "${FAST[@]}")
    sweep() { local gpu=$1 name=$2; shift 2; CUDA_VISIBLE_DEVICES=$gpu bash scripts/gpu_sweep.sh start "$name" \
      hydra/launcher=parallel "$@" "${common[@]}"; }
    # ML-1M: the two best MoL screens of round 3 and both presets under the compiled step, 3 seeds each.
    sweep 0 r7_mol_item_dropout hydra.launcher.n_jobs=3 experiment=ml_1m_seq_hstu_large_mol \
      model.similarity.item_dropout=0.3 seed=1,2,3 "${MOL_FAST[@]}"
    sweep 0 r7_mol_8x8x32 hydra.launcher.n_jobs=3 experiment=ml_1m_seq_hstu_large_mol \
      model.similarity.num_item_components=8 model.similarity.component_dim=32 seed=1,2,3 "${MOL_FAST[@]}"
    sweep 1 r7_dot hydra.launcher.n_jobs=3 experiment=ml_1m_seq_hstu_large_dot seed=1,2,3
    sweep 1 r7_mol hydra.launcher.n_jobs=3 experiment=ml_1m_seq_hstu_large_mol seed=1,2,3 "${MOL_FAST[@]}"
    # Seeds 2 and 3 of the two ML-1M table rows that have one (issue #12 deliverable 2: 3 seeds each).
    sweep 0 r7_hstu_seeds hydra.launcher.n_jobs=2 experiment=ml_1m_seq_hstu_dot seed=2,3
    sweep 0 r7_sasrec_mol_seeds hydra.launcher.n_jobs=2 experiment=ml_1m_seq_sasrec_mol seed=2,3 "${MOL_FAST[@]}"
    ;;
  gap)
    # The HSTU-gap jobs that round 3 had to stop (mol_investigation §0.2): the Triton attention vs PyTorch's in
    # training, TF32 vs full fp32, and the separate validation item for the two HSTU-large rows.
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1}
    common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false "${FAST[@]}")
    sweep() { local gpu=$1 name=$2; shift 2; CUDA_VISIBLE_DEVICES=$gpu bash scripts/gpu_sweep.sh start "$name" \
      hydra/launcher=parallel "$@" "${common[@]}"; }
    large=experiment=ml_1m_seq_hstu_large_dot
    sweep 0 r7_attention_torch hydra.launcher.n_jobs=2 $large model.encoder.attention_impl=torch seed=1,2
    sweep 1 r7_fp32 hydra.launcher.n_jobs=2 $large matmul_precision=highest seed=1,2
    sweep 0 r7_holdout2_dot hydra.launcher.n_jobs=1 $large data.holdout=2 seed=1
    sweep 1 r7_holdout2_mol hydra.launcher.n_jobs=1 experiment=ml_1m_seq_hstu_large_mol data.holdout=2 seed=1 \
      "${MOL_FAST[@]}"
    ;;
  wait)
    # Collect with one trained MoL checkpoint (ML-1M HSTU-large + MoL, seed 1: ~12 MB, under the device's
    # 16 MiB per file) for the trained-model rows of bench_topk (part "trained").
    COLLECT_CKPT=1 COLLECT_CKPT_GLOB='r7_mol/0' bash scripts/gpu_sweep.sh wait "${2:-540}"
    ;;
  trained)
    # bench_topk on a trained checkpoint at its corpus size and tiled to 1M items, queried by its test users.
    # Here: tar -xzf <files_at>/ckpts.tar.gz -C .devdata (carry .devdata), then this part.
    ckpt=$(ls .devdata/ckpts/r7_mol/0.ckpt 2>/dev/null || true)
    [ -n "$ckpt" ] || { echo "no .devdata/ckpts/r7_mol/0.ckpt: unpack ckpts.tar.gz into .devdata first" >&2; exit 2; }
    timeout 540 python3 scripts/bench_topk.py --checkpoint "$ckpt" --checkpoint-data-root "$PWD/.devdata" \
      --batch-sizes 1 32 256 --runs 10 --warmup 2 --time-budget-s 1.0 --truth-queries 256 --no-faiss \
      --out "$OUT/trained" 2>&1 | tail -n 12
    ;;
  beauty)
    # Why MoL trails the dot product on Beauty (round 3, mol_investigation §0.2): SASRec, Amazon (Books) recipe,
    # seed 1, 201 epochs, one change each against the MoL preset (8x8x32, GeGLU, no uid, bf16 autocast).
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1 MPS=${MPS:-1}
    common=(data.root="$PWD/.devdata" ++callbacks.progress_bar=null trainer.enable_progress_bar=false seed=1
      trainer.max_epochs=201 "${FAST[@]}")
    one() { local gpu=$1 name=$2; shift 2; CUDA_VISIBLE_DEVICES=$gpu bash scripts/gpu_sweep.sh start "$name" "$@"       "${common[@]}"; }
    one 0 r7_beauty_dot experiment=amazon_beauty_sasrec_dot
    one 0 r7_beauty_mol experiment=amazon_beauty_sasrec_mol "${MOL_FAST[@]}"
    one 1 r7_beauty_mol_fp32 experiment=amazon_beauty_sasrec_mol model.similarity.autocast_bf16=false "${MOL_FAST[@]}"
    one 1 r7_beauty_mol_ml_head experiment=amazon_beauty_sasrec_mol model/similarity=mol \
      'model.similarity.uid_hash_sizes=[]' "${MOL_FAST[@]}"
    one 0 r7_beauty_mol_item_dropout experiment=amazon_beauty_sasrec_mol model.similarity.autocast_bf16=false \
      model.similarity.item_dropout=0.3 "${MOL_FAST[@]}"
    one 1 r7_beauty_dot_full_softmax experiment=amazon_beauty_sasrec_dot model/negatives=full_softmax \
      model.negatives.num_negatives=null
    # The timestamp effect with the model whose ML-1M gap it may explain: HSTU-large + dot (the ML-1M preset's
    # settings, 101 epochs), real timestamps vs positions.
    one 0 r7_beauty_hstu_large_ts hydra/launcher=parallel hydra.launcher.n_jobs=2 experiment=ml_1m_hstu_large_dot \
      data=amazon_beauty data.max_seq_len=50 data.timestamps=data,positions trainer.max_epochs=101
    ;;
  *)
    sed -n 2,22p "$0"
    exit 2
    ;;
esac

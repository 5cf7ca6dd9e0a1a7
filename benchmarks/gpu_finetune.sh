#!/usr/bin/env bash
# The fine-tuning regime on one GPU, in one go: what a session with a GPU runs (≤ 10 min on one H200).
#
#     bash benchmarks/gpu_finetune.sh                 # BUDGET_S=540: everything ends within 9 minutes
#
# 1. nvidia-smi, Python and torch versions, the commit -> the log;
# 2. benchmarks/finetune_throughput.py on CUDA (bf16 + channels-last and fp32, 20 k images, batch 512)
#    -> results/benchmarks/gpu/finetune_throughput.{json,md} (the committed 2-core CPU page is left alone);
# 3. the `gpu` fine-tuning scale (alkit.finetune.FINETUNE_SCALES["gpu"]: CIFAR-10; random, margin, base,
#    badge, vaal x seeds 0-2; 1,000 random initial labels + 3 rounds x 1,000; a ResNet-18 (CIFAR stem)
#    from scratch each round, preset gpu_cifar10: 30 epochs, batch 256, bf16) into
#    results/runs/finetune-gpu/cifar10/, seed by seed, until the budget is spent. Each finished run
#    leaves <strategy>__seed<k>.csv/.npz/.json (the .json: run key and provenance: commit, versions,
#    GPU, wall time); sweep_times.json logs a sweep that finishes. Running the script again resumes:
#    finished runs are skipped, and the run that was cut off starts again (its checkpoint *.ckpt
#    stays on that machine);
# 4. a table of final top-1 per strategy, and one archive $OUT/gpu_finetune.tar.gz (runs, benchmark
#    page, log; without checkpoints) when $OUT is set (the device tool brings back at most 8 files).
#
# Data: cifar10-jpeg.tar.gz (docs/data.md) under $ALKIT_DATA, ./data, ./shared/data or ../shared/data.
# The device machine gets only the repository: copy the archive into ./data (ignored through
# .git/info/exclude: `mkdir -p data && cp ../shared/data/cifar10-jpeg.tar.gz data/ && echo /data/ >>
# .git/info/exclude`) and carry "data". Python: $PY, else .venv/bin/python, else python3 (it needs
# torch, torchvision, numpy, pandas, scipy, pillow and tqdm; no Jupyter).
# Then: commit results/runs/finetune-gpu; `make reproduce-figures` renders notebook h from it.
# A dry run of the script's path on a CPU: SCALE=smoke DEVICE=cpu bash benchmarks/gpu_finetune.sh (seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET_S=${BUDGET_S:-540}
STARTED=$(date +%s)
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SCALE=${SCALE:-gpu}
DEVICE=${DEVICE:-cuda}
RUNS=results/runs/finetune-$SCALE
LOG=${OUT:-$RUNS}/gpu_finetune.log
mkdir -p "$RUNS" "$(dirname "$LOG")"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
exec > >(tee -a "$LOG") 2>&1

left() { echo $((BUDGET_S - ($(date +%s) - STARTED))); }

DATA=""
for dir in "${ALKIT_DATA:-}" data shared/data ../shared/data; do
  if [ -n "$dir" ] && [ -f "$dir/cifar10-jpeg.tar.gz" ]; then DATA=$dir; break; fi
done
if [ -z "$DATA" ]; then
  echo "gpu_finetune: cifar10-jpeg.tar.gz not found under \$ALKIT_DATA, data/, shared/data or ../shared/data;" \
       "copy it into data/ and carry it (see the top of this script)" >&2
  exit 2
fi
export ALKIT_DATA=$DATA

echo "== $(date -u +%FT%TZ) gpu_finetune: budget ${BUDGET_S} s, data ${DATA}, python ${PY}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda',
torch.version.cuda, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
echo "commit $(git rev-parse HEAD 2>/dev/null || echo "${ALKIT_COMMIT:-unknown}")"
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 2
  echo "== throughput (at most 150 s)"
  timeout 150 "$PY" benchmarks/finetune_throughput.py --skip-cpu --cuda-images 20000 --cuda-epochs 3 \
    --cuda-batch 512 --out results/benchmarks/gpu || echo "throughput: stopped (status $?)"
fi

SWEEP_S=$(( $(left) - 45 ))   # what is left, less the summary and the archive
[ "$SWEEP_S" -gt 60 ] || SWEEP_S=60
echo "== the ${SCALE} fine-tuning scale into ${RUNS} on ${DEVICE} (at most ${SWEEP_S} s; resumable)"
timeout --signal=INT --kill-after=20 "$SWEEP_S" "$PY" -c "
from alkit.experiments.reproduce import reproduce_finetune
reproduce_finetune('$SCALE', '$RUNS', data_root='$DATA', device='$DEVICE')
" || echo "sweep: stopped at the budget or failed (status $?); run the script again to resume"

echo "== finished runs"
"$PY" -c "
import pandas as pd
from alkit.experiments.runs import load_runs
rows = load_runs('$RUNS', 'cifar10')
if rows.empty:
    print('none yet')
else:
    last = rows[rows['round'] == rows['round'].max()]
    print(rows.groupby('strategy')['seed'].nunique().rename('seeds').to_frame().join(
        last.groupby('strategy')[['top1', 'training_seconds', 'selection_seconds']].mean()).round(4).to_string())
"
echo "== done in $(( $(date +%s) - STARTED )) s"
if [ -n "${OUT:-}" ]; then
  tar -czf "$OUT/gpu_finetune.tar.gz" --exclude='*.ckpt' --exclude='*.claim' "$RUNS" results/benchmarks/gpu \
    2>/dev/null || tar -czf "$OUT/gpu_finetune.tar.gz" --exclude='*.ckpt' --exclude='*.claim' "$RUNS"
fi

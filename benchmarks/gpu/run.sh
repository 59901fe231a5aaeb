#!/usr/bin/env bash
# On the GPU machine: install the carried wheels, then sweep one model at its real size
# (random weights) against our service and both baselines. README "Benchmarks" gives the
# whole sequence of device calls; each call runs one of:
#
#   bash benchmarks/gpu/run.sh sd15 --systems raw naive   # with .whl/part1 carried
#   bash benchmarks/gpu/run.sh sd15 --systems serve       # with .whl/part2 carried
#   bash benchmarks/gpu/run.sh z-image-turbo              # both parts already there
#
# Extra arguments go to `python -m benchmarks.sweep` and override the defaults below.
# Rows accumulate in .bench-cache/results (kept while the machine stays warm; --resume
# skips what is measured); each call copies the model's JSON, Markdown, PNGs and log to
# $OUT. With DRY_RUN=1 it prints the sweep command and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:?usage: run.sh sd15|sdxl|z-image-turbo [sweep arguments]}
shift

case "$model" in
    # Sized so each model's whole sweep fits one 10-minute device call on an H100.
    sd15) defaults=(--concurrency 1 4 8 16 --batch-sizes 1 8 --requests 32 --rates 4
                    --open-requests 24 --raw-calls 3) ;;
    sdxl) defaults=(--concurrency 1 4 8 --batch-sizes 1 4 --requests 16 --rates 1
                    --open-requests 8 --raw-calls 2) ;;
    z-image-turbo) defaults=(--concurrency 1 4 8 --batch-sizes 1 4 --requests 16 --rates 0.6
                             --open-requests 8 --raw-calls 2) ;;
    *) echo "unknown model $model" >&2; exit 2 ;;
esac

results=.bench-cache/results
command=(python3 -m benchmarks.sweep --config benchmarks/gpu/models.yaml --model "$model"
         --build-real --gpus 1 --threads 4 --out "$results" --resume --deadline-s 500
         "${defaults[@]}" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "${command[*]}"
    exit 0
fi

# Install every part that has arrived so far; say which are still missing.
site=/tmp/site
mkdir -p "$site"
missing=$(comm -23 <(sort -u .whl/part*/MANIFEST) <(ls .whl/part*/ | grep '\.whl$' | sort -u))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/part*/*.whl
if [[ -n "$missing" ]]; then
    echo "not carried yet (fine for --systems raw naive): $(echo $missing | tr '\n' ' ')"
fi
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true

mkdir -p "$results"
log="$results/$model.log"
status=0
"${command[@]}" 2>&1 | tee "$log" || status=$?
if [[ -n "${OUT:-}" ]]; then
    cp "$results"/*"-$model"{.json,.md,-throughput.png,-p95.png} "$OUT"/ 2>/dev/null || true
    cp "$log" "$OUT"/
fi
exit "$status"

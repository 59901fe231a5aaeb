#!/usr/bin/env bash
# The GPU benchmark in two back-to-back device calls (README "Benchmarks on a GPU"):
#
#   bash benchmarks/gpu/run.sh baselines   # carry .whl/part1: raw pipeline, naive server, LitServe
#   bash benchmarks/gpu/run.sh serve       # carry .whl/part2: this service
#
# Each phase sweeps SD 1.5 (512², 25 steps) and Z-Image-Turbo (1024², 8 steps) at
# concurrency 1 and 8 with max batch 8, random weights at the real size, built on the
# card. Every sweep has a deadline (--deadline-s), so a phase returns what it measured
# in time; rows accumulate in $RESULTS (kept while the machine stays warm, 30 s), and
# each phase copies every model's JSON, Markdown and log to $OUT (at most 8 files come
# back from a call; `python -m benchmarks.report` draws the PNGs from the JSON here).
#
# BENCH_PROFILE=cpu runs the same two phases on this CPU with the tiny models of
# configs/local.yaml, or $BENCH_CONFIG (the CI rehearsal: tests/integration/test_gpu_script.py).
# DRY_RUN=1 prints the sweep commands and runs nothing. Extra arguments go to every sweep.
set -euo pipefail
cd "$(dirname "$0")/../.."
phase=${1:?usage: run.sh baselines|serve [sweep arguments]}
shift
case "$phase" in
    baselines) systems=(raw naive litserve) ;;
    serve) systems=(serve) ;;
    *) echo "unknown phase $phase (baselines or serve)" >&2; exit 2 ;;
esac

profile=${BENCH_PROFILE:-gpu}
results=${RESULTS:-.bench-cache/results}
common=(--concurrency 1 8 --batch-sizes 8 --resume --out "$results" --systems "${systems[@]}")
case "$profile" in
    gpu)
        python=python3
        config=benchmarks/gpu/models.yaml
        models=(sd15 z-image-turbo)
        common+=(--config "$config" --build-real --gpus 1 --threads 4)
        # Seconds after which a sweep starts no new row, and after which it is stopped
        # (its rows so far are saved), per model: both fit one call of 300 s.
        declare -A deadline=([sd15]=110 [z-image-turbo]=150)
        declare -A limit=([sd15]=130 [z-image-turbo]=160)
        declare -A sizing=([sd15]="--requests 24 --raw-calls 3"
                           [z-image-turbo]="--requests 16 --raw-calls 2")
        ;;
    cpu)
        python=${PYTHON:-.venv/bin/python}
        config=${BENCH_CONFIG:-configs/local.yaml}
        models=(sd-tiny z-image-tiny)
        common+=(--config "$config" --threads 1 --size 64x64 --steps 2 --no-progress
                 --notes "CPU rehearsal of the GPU script: tiny random-weight models")
        # Generous: CI machines are slow and shared; the GPU profile is the tight one.
        declare -A deadline=([sd-tiny]=300 [z-image-tiny]=300)
        declare -A limit=([sd-tiny]=600 [z-image-tiny]=600)
        declare -A sizing=([sd-tiny]="--requests 8 --raw-calls 1"
                           [z-image-tiny]="--requests 8 --raw-calls 1")
        ;;
    *) echo "unknown BENCH_PROFILE $profile (gpu or cpu)" >&2; exit 2 ;;
esac

commands=()
for model in "${models[@]}"; do
    # shellcheck disable=SC2206  # the sizing strings are word lists on purpose
    words=($python -m benchmarks.sweep --model "$model" "${common[@]}"
           --deadline-s "${deadline[$model]}" ${sizing[$model]} "$@")
    commands+=("$(printf '%q ' "${words[@]}")")
done
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s\n' "${commands[@]}"
    exit 0
fi

if [[ "$profile" == gpu ]]; then
    # Install every wheel part that has arrived so far; say which are still missing.
    site=/tmp/site
    mkdir -p "$site"
    missing=$(comm -23 <(sort -u .whl/part*/MANIFEST) <(ls .whl/part*/ | grep '\.whl$' | sort -u))
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/part*/*.whl
    if [[ -n "$missing" ]]; then
        echo "not carried yet (fine for the baselines phase): $(echo $missing | tr '\n' ' ')"
    fi
    export PYTHONPATH="$site:$PWD"
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
fi
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0

mkdir -p "$results"
status=0
for index in "${!models[@]}"; do
    model=${models[$index]}
    log="$results/$model-$phase.log"
    echo "--- $phase: $model"
    timeout -s INT -k 15 "${limit[$model]}" bash -c "${commands[$index]}" 2>&1 | tee "$log" \
        || status=$?
    if [[ -n "${OUT:-}" ]]; then
        cp "$results"/*"-$model".{json,md} "$OUT"/ 2>/dev/null || true
        cp "$log" "$OUT"/
    fi
done
exit "$status"

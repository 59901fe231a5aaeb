#!/usr/bin/env bash
# Ray Serve's per-request switches, measured against the service as `make serve` runs it:
# each variant starts `make serve` (configs/local.yaml) with its environment (which reaches
# the proxy, the controller and every replica), warms it, and prints the CPU each Ray
# process spends per request at concurrency 1 and 16 (benchmarks/overhead.py). Variants
# are interleaved over ROUNDS rounds, since this machine's noise is as large as the effects.
#
#   bash benchmarks/serve_flags.sh                      # all variants, 2 rounds
#   VARIANTS="base proxy-loop" ROUNDS=3 bash benchmarks/serve_flags.sh
#
# Needs port 8000 free and no other Ray on this machine (it runs `ray stop` between runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-.venv/bin}

declare -A flags=(
    [base]=""
    # The proxy routes on its own event loop instead of a second one (the shipped configs
    # already set this for the replicas, through the application's runtime_env).
    [proxy-loop]="RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0"
    # ... and every hop (proxy -> Gateway -> model) over gRPC instead of Ray actor calls.
    [grpc]="RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 RAY_SERVE_PROXY_USE_GRPC=1 RAY_SERVE_USE_GRPC_BY_DEFAULT=1"
)

if curl -s -o /dev/null http://127.0.0.1:8000/; then
    echo "something already answers on 127.0.0.1:8000; stop it first" >&2
    exit 2
fi

stop_server() {
    kill -INT -- "-$server" 2> /dev/null || true
    sleep 8
    "$bin/ray" stop --force > /dev/null 2>&1 || true
    # `serve run` can outlive its cluster; the next variant needs the port and a bare node.
    kill -KILL -- "-$server" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
    sleep 3
}

for round in $(seq "${ROUNDS:-2}"); do
    for variant in ${VARIANTS:-base proxy-loop grpc}; do
        echo "=== $variant, round $round"
        # `make serve` as a user runs it, with the variant's flags in its environment.
        # shellcheck disable=SC2086  # the flags are a word list on purpose
        env ${flags[$variant]} setsid make serve > "/tmp/serve_flags-$variant.log" 2>&1 &
        server=$!
        healthy=0
        for _ in $(seq 150); do
            curl -sf http://127.0.0.1:8000/v1/health > /dev/null && { healthy=1; break; }
            sleep 2
        done
        if [[ $healthy == 0 ]]; then
            echo "$variant never became healthy: see /tmp/serve_flags-$variant.log" >&2
            stop_server
            exit 1
        fi
        "$bin/python" -m benchmarks.load --model sd-tiny --concurrency 4 --requests 40 \
            --size 64x64 --steps 4 > /dev/null 2>&1  # warm-up
        "$bin/python" -m benchmarks.overhead --concurrency 1 --requests 100
        "$bin/python" -m benchmarks.overhead --concurrency 16 --requests 320
        stop_server
    done
done

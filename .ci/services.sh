#!/usr/bin/env bash
# What the tests talk to: PostgreSQL (127.0.0.1:5432, trust auth, database `test`),
# Redis (127.0.0.1:6379) and a headless Chromium for the console's browser tests
# (/usr/bin/chromium). Used when there; installed from Debian's packages (and the servers
# started) when not, so a fresh machine passes too.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 30); do port_open "$1" && return 0; sleep 1; done
    echo "nothing answers on 127.0.0.1:$1" >&2
    return 1
}

if ! port_open 5432; then
    echo "--- starting PostgreSQL"
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    fi
    version=$(ls /etc/postgresql | sort -V | tail -1)
    conf=/etc/postgresql/$version/main
    # Local test server only: trust auth on loopback, as the tests expect.
    $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
        "$conf/pg_hba.conf"
    $SUDO sed -i -E 's/^(local\s+all\s+all\s+)\S+/\1trust/' "$conf/pg_hba.conf"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_port 5432
fi
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null
fi

if ! port_open 6379; then
    echo "--- starting Redis"
    if ! command -v redis-server >/dev/null; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
    fi
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port 6379
fi

# A CJK font too, so the console's Chinese screenshots show text, not boxes.
if ! command -v chromium >/dev/null || ! fc-list :lang=zh | grep -q .; then
    echo "--- installing Chromium and a CJK font (the console's browser tests)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
fi
echo "services: PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379, $(chromium --version 2>/dev/null)"

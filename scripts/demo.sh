#!/usr/bin/env bash
# `make demo`: the live daemon end to end, on this machine, in about a minute.
#
#   1. starts a local Kafka-compatible broker (Tansu, via scripts/services.sh) on its own port;
#   2. creates a usage topic (4 partitions) and produces the sample stream into it, keyed by tenant_id
#      (replay_data/sample.jsonl.gz, or a synthetic stream with injected incidents until that exists);
#   3. runs `sentinel run` (no Redis: in-memory checkpoints and ledger) until every partition is drained;
#   4. prints the alerts, and stops only what it started.
#
# Usage: scripts/demo.sh [EVENTS.jsonl[.gz]]
# Settings: DEMO_RUN_DIR (default .run/demo), DEMO_KAFKA_PORT (default 19192), PYTHON.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHON
export RUN_DIR=${DEMO_RUN_DIR:-$REPO/.run/demo}
export KAFKA_PORT=${DEMO_KAFKA_PORT:-19192}
mkdir -p "$RUN_DIR"
BOOTSTRAP=127.0.0.1:$KAFKA_PORT
TOPIC=sentinel-demo-$(date +%s)
ALERTS=$RUN_DIR/alerts.jsonl
INPUT=${1:-replay_data/sample.jsonl.gz}

cleanup() { scripts/services.sh stop tansu >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

if [ ! -f "$INPUT" ]; then
    INPUT=$RUN_DIR/synthetic.jsonl
    echo "demo: replay_data/sample.jsonl.gz not found; using a synthetic stream with injected incidents ($INPUT)"
    "$PYTHON" - "$INPUT" <<'EOF'
import sys
from tests.integration.daemon_helpers import firing_events
from tests.synth import to_lines
with open(sys.argv[1], "wb") as out:
    for line in to_lines(firing_events(days=2.0, rate_per_min=8.0)):
        out.write(line + b"\n")
EOF
fi

echo "demo: starting the broker on $BOOTSTRAP"
scripts/services.sh start tansu

echo "demo: producing $INPUT to topic $TOPIC"
"$PYTHON" - "$BOOTSTRAP" "$TOPIC" "$INPUT" <<'EOF'
import gzip, sys, time
import msgspec
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, topic, path = sys.argv[1:4]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, 4, 1), NewTopic(f"{topic}-alerts", 1, 1), NewTopic(f"{topic}-dead", 1, 1)])
admin.close()

class Key(msgspec.Struct):
    tenant_id: str = ""

decode = msgspec.json.Decoder(Key).decode
producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1,
                         enable_idempotence=False)
opener = gzip.open if path.endswith(".gz") else open
n, start = 0, time.perf_counter()
with opener(path, "rb") as fh:
    for line in fh:
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        try:
            key = decode(line).tenant_id.encode() or None
        except (msgspec.DecodeError, msgspec.ValidationError):
            key = None  # malformed: produced anyway, the daemon dead-letters it
        producer.send(topic, value=line, key=key)
        n += 1
producer.flush()
producer.close()
print(f"demo: produced {n:,} events in {time.perf_counter() - start:.1f}s")
EOF

echo "demo: running sentinel run until the stream is drained (in-memory state, no Redis)"
rm -f "$ALERTS"
env -u SENTINEL_STATE__REDIS_URL \
    SENTINEL_KAFKA__SESSION_TIMEOUT_MS=2000 SENTINEL_KAFKA__HEARTBEAT_INTERVAL_MS=500 \
    SENTINEL_KAFKA__ALERTS_TOPIC="$TOPIC-alerts" SENTINEL_KAFKA__DEAD_LETTER_TOPIC="$TOPIC-dead" \
    SENTINEL_LOG_FORMAT=${SENTINEL_LOG_FORMAT:-console} SENTINEL_LOG_LEVEL=${SENTINEL_LOG_LEVEL:-warning} \
    "$PYTHON" -m sentinel.cli run --rules rules --bootstrap "$BOOTSTRAP" --topic "$TOPIC" --group "demo-$$" \
    --http-port 0 --idle-advance drain --idle-after 1 --exit-when-idle 2 --alerts-file "$ALERTS"

n=$(grep -c . "$ALERTS" 2>/dev/null || true)
echo
echo "demo: ${n:-0} alert versions (in $ALERTS and on topic $TOPIC-alerts, key = alert_id)"
"$PYTHON" -m sentinel.cli alerts "$ALERTS"
echo "demo: stopping the broker"

"""A quiet live partition is advanced on wall time: buffered events are released, quiet incidents resolve."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from sentinel.config import DaemonSettings, KafkaSettings, Settings
from sentinel.daemon import Daemon
from sentinel.rules import load_rules
from sentinel.state.checkpoints import MemoryCheckpointStore
from sentinel.state.ledger import MemoryNotificationLedger
from tests.integration.daemon_helpers import REPO, wait_for
from tests.services import consume_all, create_topic, produce_lines
from tests.synth import Factory, to_lines

pytestmark = pytest.mark.kafka


def test_wall_clock_idle_advance_releases_and_resolves(kafka_bootstrap: str, tmp_path: Path) -> None:
    now0 = time.time()
    f = Factory(f"idle{uuid.uuid4().hex[:6]}")
    events = [f.event(now0 - 1800 + i * 60.0, tenant_id="t_alpha", api_key_id="key_alpha_2") for i in range(25)]
    events += [f.event(now0 - 600 + i * 10.0, tenant_id="t_beta", api_key_id="key_beta_7", user_id="u_b7",
                       request_id=f"x{i}", resource_tenant_id="t_alpha") for i in range(10)]
    events.sort(key=lambda e: e.t)
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    create_topic(kafka_bootstrap, f"{topic}-alerts", 1)
    produce_lines(kafka_bootstrap, topic, list(to_lines(events)))

    offset = [0.0]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=topic, group_id=f"g-{uuid.uuid4().hex[:8]}",
                            alerts_topic=f"{topic}-alerts", dead_letter_topic=None, session_timeout_ms=2000,
                            heartbeat_interval_ms=500, poll_timeout_ms=100),
        daemon=DaemonSettings(idle_advance="wall", idle_after_s=0.5),
        alerts_file=tmp_path / "alerts.jsonl",
    )
    daemon = Daemon(settings, load_rules(REPO / "rules"), MemoryCheckpointStore(), MemoryNotificationLedger(),
                    clock=lambda: now0 + offset[0], http=False)
    runner = threading.Thread(target=daemon.run, name="daemon")
    runner.start()

    def alerts() -> list[dict[str, object]]:
        return [json.loads(r.value) for r in consume_all(kafka_bootstrap, f"{topic}-alerts", timeout_s=2)]

    try:
        # Every event is processed, the last 30 s of event time included: the idle advance released them.
        wait_for(lambda: daemon.records_in == len(events) and any(a["detector"] == "cross_tenant" for a in alerts()),
                 30, "the cross-tenant incident")
        part = daemon._parts[0]
        wait_for(lambda: part.pipeline.stats.accepted == len(events) and not part.pipeline._pending, 10,
                 "buffered events released on wall time")
        time.sleep(1.5)  # a few more idle rounds at the same wall time: nothing resolves yet (quiet < 1 h)
        firing = [a for a in alerts() if a["detector"] == "cross_tenant"]
        assert firing and {a["status"] for a in firing} == {"firing"}  # versions escalate with the read count
        offset[0] = 2 * 3600.0  # two hours of wall time later, still no traffic
        wait_for(lambda: any(a["status"] == "resolved" for a in alerts()), 15, "resolution on wall time")
        resolved = next(a for a in alerts() if a["status"] == "resolved")
        assert resolved["detector"] == "cross_tenant" and resolved["version"] == len(firing) + 1
    finally:
        daemon.request_stop()
        runner.join(30)
    assert not runner.is_alive()
    lines = (tmp_path / "alerts.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["status"] for x in lines if b"cross_tenant" in x] == ["firing"] * len(firing) + ["resolved"]

"""scripts/services.sh (what `make test` and CI use) and the Kafka client options the daemon builds."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from kafka.admin import KafkaAdminClient
from pydantic import SecretStr

from sentinel.config import KafkaSettings
from sentinel.sources.kafka import client_config
from tests.services import REPO, free_port


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.syslog
def test_services_script_start_env_status_stop(tmp_path: Path) -> None:
    ports = {"KAFKA_PORT": free_port(), "REDIS_PORT": free_port(), "SYSLOG_PORT": free_port()}
    env = {**os.environ, "RUN_DIR": str(tmp_path / "run"), **{k: str(v) for k, v in ports.items()}}
    script = [str(REPO / "scripts" / "services.sh")]

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(script + list(args), env=env, capture_output=True, text=True, timeout=120)

    try:
        started = sh("start")
        assert started.returncode == 0, started.stderr
        out = sh("env").stdout.strip()
        assert out.startswith("export ")
        exported = dict(kv.split("=", 1) for kv in out[len("export "):].split())
        assert exported["KAFKA_BOOTSTRAP"] == f"127.0.0.1:{ports['KAFKA_PORT']}"
        admin = KafkaAdminClient(bootstrap_servers=exported["KAFKA_BOOTSTRAP"])
        admin.list_topics()
        admin.close()
        client = redis.Redis.from_url(exported["REDIS_URL"])
        assert client.ping()
        client.close()
        host, _, port = exported["SYSLOG_TCP"].rpartition(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"<134>1 2026-11-02T10:00:00Z host sentinel - - - services-script-check\n")
        received = Path(exported["SYSLOG_FILE"])
        for _ in range(200):
            if b"services-script-check" in received.read_bytes():
                break
            time.sleep(0.02)
        assert b"services-script-check" in received.read_bytes()
        status = sh("status")
        assert status.returncode == 0 and status.stdout.count("running") == 3
        again = sh("start", "redis")  # idempotent: already running, nothing started twice
        assert again.returncode == 0 and "already running" in again.stderr
        pids = [int((tmp_path / "run" / f"{n}.pid").read_text()) for n in ("tansu", "redis", "rsyslog")]
    finally:
        stopped = sh("stop")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert sh("status").returncode == 3


def test_client_config_maps_tls_and_sasl_without_leaking() -> None:
    plain = client_config(KafkaSettings(bootstrap_servers="a:9092, b:9093"))
    assert plain == {"bootstrap_servers": ["a:9092", "b:9093"], "security_protocol": "PLAINTEXT"}
    cfg = client_config(KafkaSettings(
        bootstrap_servers="broker:9094", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="sentinel", sasl_password=SecretStr("s3cret-pw"), ssl_cafile=Path("/etc/ca.pem"),
    ))
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_username"] == "sentinel" and cfg["sasl_plain_password"] == "s3cret-pw"
    assert cfg["ssl_cafile"] == "/etc/ca.pem" and "ssl_certfile" not in cfg
    # The settings object itself never shows the password.
    assert "s3cret-pw" not in repr(KafkaSettings(sasl_password=SecretStr("s3cret-pw")))

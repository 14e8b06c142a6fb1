"""SIGHUP reload in the daemon, without a broker: ``on_reload`` (``sentinel run``: the delivery's routes) gets
the new rules only once they are valid, and a failing ``on_reload`` keeps the current rules everywhere. The
whole path with a real ``sentinel run`` and its delivery sinks is tests/integration/test_daemon_reload_routes.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sentinel.config import Settings
from sentinel.daemon import Daemon
from sentinel.rules import RuleSet, load_rules
from sentinel.state.checkpoints import MemoryCheckpointStore
from sentinel.state.ledger import MemoryNotificationLedger

REPO = Path(__file__).resolve().parents[2]


def _daemon(rules_dir: Path, seen: list[RuleSet], fail: bool = False) -> Daemon:
    def on_reload(rules: RuleSet) -> None:
        seen.append(rules)
        if fail:
            raise RuntimeError("cannot apply")

    return Daemon(Settings(), load_rules(rules_dir), MemoryCheckpointStore(), MemoryNotificationLedger(),
                  rules_dir=rules_dir, http=False, on_reload=on_reload)


def _reloads(d: Daemon, result: str) -> float:
    return d.metrics.registry.get_sample_value("sentinel_rules_reloads_total", {"result": result}) or 0.0


def test_on_reload_gets_the_new_rules_only_when_they_are_valid(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    seen: list[RuleSet] = []
    d = _daemon(rules, seen)
    start = d.rules
    (rules / "routes.yaml").write_text("routes: []\ndefault_sinks: [ocsf]\nsilences: []\n")  # an unknown key
    d._reload_rules()
    assert seen == [] and d.rules is start and _reloads(d, "invalid") == 1
    (rules / "routes.yaml").write_text("routes: []\ndefault_sinks: [ocsf]\n")
    d._reload_rules()
    assert len(seen) == 1 and seen[0] is d.rules and d.rules.routes.default_sinks == ("ocsf",)
    assert _reloads(d, "ok") == 1


def test_a_failing_on_reload_keeps_the_current_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    seen: list[RuleSet] = []
    d = _daemon(rules, seen, fail=True)
    start = d.rules
    (rules / "routes.yaml").write_text("routes: []\ndefault_sinks: [ocsf]\n")
    d._reload_rules()
    assert len(seen) == 1 and d.rules is start and _reloads(d, "error") == 1 and _reloads(d, "ok") == 0

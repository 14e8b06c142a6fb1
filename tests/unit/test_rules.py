"""Rules directory: accepted formats, defaults, and errors that name file, line and field."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sentinel.rules import load_rules
from sentinel.yamlfile import RulesFileError

REPO = Path(__file__).resolve().parents[2]


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def test_repository_rules_are_valid() -> None:
    rules = load_rules(REPO / "rules")
    assert rules.prices.models
    assert rules.digest


def test_missing_files_mean_defaults(tmp_path: Path) -> None:
    rules = load_rules(tmp_path)
    assert rules.tenants.default_timezone == "UTC"
    assert rules.tenants.business_hours.start == "08:00"
    assert rules.budgets.budgets == ()
    ctx = rules.context()
    assert ctx.calendar.is_business_hours("any", 1793613600.0)  # Monday 10:00 UTC


def test_issue_formats_are_accepted(tmp_path: Path) -> None:
    write(tmp_path, "tenants.yaml", """
        default_timezone: UTC
        business_hours: {days: [mon, tue, wed, thu, fri], start: "08:00", end: "19:00"}
        tenants:
          t_acme: {timezone: America/New_York, cross_tenant_allowed: false}
          t_support: {cross_tenant_allowed: true}
    """)
    write(tmp_path, "budgets.yaml", """
        budgets:
          - {name: acme-monthly, scope: tenant, id: t_acme, limit_usd: 50000, period: month}
          - {name: key-daily, scope: api_key, id: key_acme_1, limit_tokens: 5000000, period: day}
    """)
    rules = load_rules(tmp_path)
    ctx = rules.context()
    assert ctx.tenant("t_support").cross_tenant_allowed and not ctx.tenant("t_acme").cross_tenant_allowed
    assert [b.name for b in ctx.budgets] == ["acme-monthly", "key-daily"]
    # 2026-11-02 13:30 UTC is 08:30 in New York (EST): business hours there, and in UTC too.
    assert ctx.calendar.local_iso("t_acme", 1793626200.0) == "2026-11-02T08:30:00-05:00"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("budgets.yaml", """
            budgets:
              - name: a
                scope: tenant
                id: t_a
                limit_usd: 10
                period: year
         """, "budgets.yaml:7: budgets[0].period:"),
        ("budgets.yaml", """
            budgets:
              - {name: a, scope: tenant, id: t_a, period: day}
         """, "budgets.yaml:3: budgets[0]: Value error, set exactly one of limit_usd or limit_tokens"),
        ("tenants.yaml", """
            tenants:
              t_a:
                timezone: Mars/Olympus
         """, "tenants.yaml:4: tenants.t_a.timezone: Value error, unknown IANA timezone"),
        ("tenants.yaml", """
            tenants:
              t_a: {cross_tenant_alowed: true}
         """, "tenants.yaml:3: tenants.t_a.cross_tenant_alowed: unknown field"),
        ("tenants.yaml", """
            business_hours: {start: "25:00"}
         """, "tenants.yaml:2: business_hours.start:"),
        ("tenants.yaml", """
            tenants:
              t_a: {timezone: UTC}
              t_a: {timezone: UTC}
         """, "tenants.yaml:4: tenants.t_a: duplicate key"),
        ("prices.yaml", """
            models:
              gpt-4o: {input: -1, output: 10}
         """, "prices.yaml:3: models.gpt-4o.input:"),
        ("budgets.yaml", "budgets: [ {name: a\n", "budgets.yaml:2: (file): YAML syntax"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, name: str, text: str, expected: str) -> None:
    write(tmp_path, name, text)
    with pytest.raises(RulesFileError) as info:
        load_rules(tmp_path)
    rendered = [e.render() for e in info.value.errors]
    assert any(expected in r for r in rendered), rendered


def test_unknown_detector_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "detectors/no_such_detector.yaml", "enabled: true\n")
    with pytest.raises(RulesFileError, match="no detector named 'no_such_detector'"):
        load_rules(tmp_path)


def test_check_rules_cli_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "sentinel.cli", "check-rules", str(REPO / "rules")],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    write(tmp_path, "budgets.yaml", "budgets:\n  - {name: a, scope: team, id: t, limit_usd: 5, period: day}\n")
    bad = subprocess.run([sys.executable, "-m", "sentinel.cli", "check-rules", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1
    assert f"{tmp_path}/budgets.yaml:2: budgets[0].scope:" in bad.stderr

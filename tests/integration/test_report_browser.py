"""The tuning report in a real headless Chromium: it renders, logs no console error, the plots are there.

Chromium is the Debian ``chromium`` package, driven through Playwright with
``executable_path`` (``playwright install`` cannot download a browser here).
The session fixture finds it, or installs it with apt-get when running as
root; it never skips: without a browser the test fails and says how to get
one. The screenshot is kept at ``$REPORT_SCREENSHOT`` (default
``.run/report-screenshot.png``) for a human to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.rules import load_rules
from sentinel.tuning.labels import Dataset, load_labels
from sentinel.tuning.report import write_report
from sentinel.tuning.sweep import TuneResult, parse_sweep, tune
from tests.synth import HOUR, T0, Factory, background, iso, merge, to_lines

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.geteuid() != 0:
        pytest.fail("chromium is not installed; run: sudo apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "chromium"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        res = subprocess.run(cmd, env=env, capture_output=True)
        if res.returncode != 0:
            pytest.fail(f"apt-get install chromium failed: {res.stderr.decode(errors='replace')[-500:]}")
    path = shutil.which("chromium")
    if not path:
        pytest.fail("chromium still missing after apt-get install chromium")
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed; run: pip install -e '.[dev]' (or pip install playwright)")
    exe = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> TuneResult:
    d = tmp_path_factory.mktemp("report")
    f = Factory("inc")
    reads = [f.event(T0 + 20 * HOUR + 120 * i, tenant_id="t_beta", api_key_id="key_beta_1",
                     resource_tenant_id="t_alpha", user_id="u_b", cost_usd=0.4) for i in range(8)]
    stray = [f.event(T0 + 30 * HOUR, tenant_id="t_gamma", api_key_id="key_gamma_1", resource_tenant_id="t_beta")]
    events = merge(background(days=2.0, seed=5), reads, stray)
    (d / "e.jsonl").write_bytes(b"\n".join(to_lines(events)) + b"\n")
    (d / "e.labels.json").write_text(json.dumps([
        {"detector": "cross_tenant", "kind": "cross_tenant_read", "start": iso(T0 + 20 * HOUR),
         "end": iso(T0 + 20 * HOUR + 960), "entities": {"tenant_id": "t_beta", "api_key_id": "key_beta_1"},
         "description": "t_beta reads t_alpha's index <script>alert('x')</script>"},
        {"detector": "cross_tenant", "kind": "negative:migration", "start": iso(T0 + 2 * HOUR),
         "end": iso(T0 + 40 * HOUR), "entities": {"tenant_id": "t_alpha"}, "description": "migration"},
    ]))
    ds = Dataset("e", (str(d / "e.jsonl"),), tuple(load_labels(d / "e.labels.json")))
    rules = load_rules(None)
    specs = [parse_sweep("cross_tenant.min_score=0.65,0.8,0.95", rules)]
    return tune([ds], rules, specs, target_fp_per_day=0.5, workers=1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def test_report_renders_without_errors_and_has_the_plots(browser: Any, result: TuneResult, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report(result, path)
    html = path.read_text()
    assert "<script>alert('x')</script>" not in html  # label text is escaped
    assert "src=\"http" not in html and "href=\"http" not in html  # self-contained: nothing to fetch
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    messages: list[tuple[str, str]] = []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert [m for m in messages if m[0] in ("error", "warning", "pageerror")] == []
    assert requests == [path.as_uri()]  # no other resource was loaded
    # Plots: the tenant spend chart and one per api key involved, each with its lines; label windows; marks.
    spend = page.locator("svg.chart[aria-label*='spend per tenant']")
    assert spend.count() == 1
    assert spend.locator("polyline.line").count() == 3  # the three synthetic tenants
    assert spend.locator("rect.window").count() == 2
    assert page.locator("svg.chart[aria-label*='api key key_beta_1']").count() == 1
    assert page.locator("svg .mark").count() >= 2
    # The trade-off curve of the sweep: baseline + 3 values (equal outcomes share a point).
    curve = page.locator("svg.chart[aria-label='trade-off cross_tenant.min_score']")
    assert curve.count() == 1 and curve.locator("polyline.curve").count() == 1
    assert 2 <= curve.locator("circle.point").count() <= 4
    assert curve.locator("circle.point[fill='#1b9e3a']").count() == 1  # the recommended value
    # The alert table, its filter, and a click on a mark filtering it.
    rows = page.locator("#alerts tbody tr")
    total = rows.count()
    assert total == sum(len(r.incidents) for r in result.baseline) >= 2
    page.fill("#alert-filter", "true alert")
    visible = page.locator("#alerts tbody tr:visible").count()
    assert 1 <= visible < total
    assert "of" in page.inner_text("#alert-count")
    page.fill("#alert-filter", "")
    assert page.locator("#alerts tbody tr:visible").count() == total
    mark = page.locator("svg.chart[aria-label*='spend per tenant'] .mark").first
    aid = mark.get_attribute("data-alert")
    mark.click()
    assert page.input_value("#alert-filter") == aid
    assert page.locator("#alerts tbody tr:visible").count() == 1
    details = page.locator("#alerts tbody tr:visible details")
    details.locator("summary").click()
    assert "foreign_reads" in details.inner_text()
    # A screenshot for a human (kept), and checked to be a real, non-trivial image.
    page.fill("#alert-filter", "")
    shot = Path(os.environ.get("REPORT_SCREENSHOT", str(REPO / ".run" / "report-screenshot.png")))
    shot.parent.mkdir(parents=True, exist_ok=True)
    data = page.screenshot(path=str(shot), full_page=True)
    w, h = png_size(data)
    assert w == 1300 and h > 1500
    assert len(data) > 60_000  # charts and tables, not a blank page
    page.close()

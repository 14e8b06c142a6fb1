"""The tuning report: one self-contained HTML file (inline CSS, inline SVG, a few lines of inline JS).

No CDN, no external font, no chart library: the plots are SVG written here,
so the file opens anywhere, offline, and diffs cleanly between runs (nothing
in it depends on the wall clock). Sections:

1. **Summary** -- the baseline scores per detector and the recommendations.
2. **Spend over time** -- per dataset, hourly spend of the top tenants, and of
   every api key a label or an incident points at; label windows are shaded
   (incident red, hard negative grey) and incidents are marked at their
   detection time, coloured by outcome (TP, FP, hard-negative FP, expected).
3. **Trade-off curves** -- per swept parameter, recall against false alerts
   per day for each value, with the target drawn in.
4. **Labels** -- each incident label: detected or not, time to detect, dollars.
5. **Alerts** -- every incident with its outcome, signals and evidence
   (filterable by text; the evidence opens in place).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel.alerts import rfc3339
from sentinel.progress import Progress
from sentinel.tuning.labels import Label
from sentinel.tuning.scoring import SPEND_BUCKET_S, DetectorScore, Incident, RunRecord
from sentinel.tuning.sweep import BASELINE, DatasetRun, SweepSpec, TuneResult, setting_values

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac", "#e15759",
           "#ff9da7")
OUTCOME_COLOR = {"tp": "#1b9e3a", "fp": "#d62728", "hard_negative_fp": "#ff7f0e", "expected": "#1f77b4"}
OUTCOME_TEXT = {"tp": "true alert", "fp": "false alert", "hard_negative_fp": "false alert (hard negative)",
                "expected": "expected (other detector's incident)"}
MAX_TENANT_LINES = 8
MAX_KEY_CHARTS = 12
MAX_ALERT_ROWS = 3000

_e = html.escape

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2937;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cbd5e1}
main{padding:8px 24px 40px;max-width:1400px;box-sizing:border-box}
h2{margin:28px 0 8px;font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{margin:18px 0 6px;font-size:15px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #e2e2e2;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f1f3f5}
td.l,th.l{text-align:left}
td{white-space:nowrap}td.w{white-space:normal;min-width:280px;max-width:520px}
.chart{background:#fff;border:1px solid #e2e2e2;margin:6px 0 14px;display:block}
.legend{font-size:12px;margin:2px 0 8px}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-2px;margin-right:4px}
.tp{color:#1b9e3a}.fp{color:#d62728}.hard_negative_fp{color:#ff7f0e}.expected{color:#1f77b4}
details summary{cursor:pointer;color:#2563eb}
pre{margin:4px 0;white-space:pre-wrap;font-size:12px;max-width:700px}
#alert-filter{padding:4px 8px;width:320px;margin:6px 0}
.note{color:#666;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.scroll{overflow-x:auto;max-width:100%}
"""

JS = """
(function(){
  var box = document.getElementById('alert-filter');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#alerts tbody tr'));
  var count = document.getElementById('alert-count');
  function apply(){
    var q = box.value.toLowerCase().trim();
    var shown = 0;
    rows.forEach(function(r){
      var hit = !q || r.getAttribute('data-search').indexOf(q) >= 0;
      r.style.display = hit ? '' : 'none';
      if (hit) { shown++; }
    });
    count.textContent = shown + ' of ' + rows.length + ' incidents shown';
  }
  if (box) { box.addEventListener('input', apply); apply(); }
  document.querySelectorAll('svg .mark').forEach(function(m){
    m.addEventListener('click', function(){
      var id = m.getAttribute('data-alert');
      if (box && id) { box.value = id; apply(); location.hash = 'alerts'; }
    });
  });
  document.body.setAttribute('data-ready', '1');
})();
"""


# -- text tables (the terminal output of sentinel tune) --------------------------------------------------


def fmt_duration(s: float | None) -> str:
    """``None`` -> ``-``; seconds as ``42s``, ``7m05s``, ``3.5h``, ``2.1d``."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400 * 2:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def score_row(name: str, ds: DetectorScore) -> list[str]:
    return [name, f"{ds.detected}/{ds.labels}", _pct(ds.precision), _pct(ds.recall), f"{ds.fp}",
            f"{ds.hard_negative_fp}", f"{ds.fp_per_day:.2f}", f"{ds.fp_per_million:.1f}",
            fmt_duration(ds.ttd_median_s), fmt_duration(ds.ttd_max_s), f"{ds.usd_before_total:.2f}",
            f"{ds.usd_missed:.2f}"]


HEADER = ["", "found", "prec", "recall", "FP", "hardFP", "FP/day", "FP/Mev", "TTD med", "TTD max", "$ before",
          "$ missed"]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_text(res: TuneResult) -> str:
    out = []
    days = sum(r.record.days for r in res.baseline)
    events = sum(r.record.events for r in res.baseline)
    out.append(f"{len(res.datasets)} dataset(s), {events:,} events, {days:.1f} days of event time; "
               f"{len(res.settings)} setting(s); incidents counted from severity {res.min_severity}, "
               f"grace {fmt_duration(res.grace_s)}")
    out.append("")
    out.append("baseline (rules as given)")
    out.append(table([score_row(d, s) for d, s in res.scores[BASELINE].items()], [("detector"), *HEADER[1:]]))
    for det in sorted({s.detector for s in res.settings if s.detector}):
        rows = [score_row(BASELINE, res.scores[BASELINE][det])]
        for s in res.settings[1:]:
            if s.detector == det:
                rows.append(score_row(s.name.split(".", 1)[1], res.scores[s.name][det]))
        out.append("")
        out.append(f"sweep {det}")
        out.append(table(rows, ["setting", *HEADER[1:]]))
    out.append("")
    out.append(f"recommended (best recall with FP/day <= {res.target_fp_per_day:g})")
    rows = []
    for det, rec in res.recommendations.items():
        what = BASELINE if not rec.changed else ", ".join(f"{k}={v}" for k, v in rec.overrides.items())
        if not rec.under_target:
            what = f"none under target (keep {BASELINE})"
        rows.append([det, what, _pct(rec.score.recall), f"{rec.score.fp_per_day:.2f}",
                     fmt_duration(rec.score.ttd_median_s)])
    out.append(table(rows, ["detector", "setting", "recall", "FP/day", "TTD med"]))
    return "\n".join(out) + "\n"


# -- small SVG toolkit ----------------------------------------------------------------------------


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


class Frame:
    """A plot area: data ranges mapped to SVG pixels, with axes drawn."""

    def __init__(self, width: int, height: int, x0: float, x1: float, y0: float, y1: float,
                 left: int = 56, right: int = 14, top: int = 14, bottom: int = 34) -> None:
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1.0)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1.0)
        self.parts: list[str] = []

    def x(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def y(self, v: float) -> float:
        return self.h - self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.top - self.bottom)

    def axes(self, x_ticks: Sequence[tuple[float, str]], y_label: str, x_label: str = "") -> None:
        p = self.parts
        yb = self.h - self.bottom
        for v in _nice_ticks(self.y0, self.y1):
            yy = self.y(v)
            p.append(f'<line x1="{self.left}" x2="{self.w - self.right}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     f'stroke="#eee"/><text x="{self.left - 5}" y="{yy + 4:.1f}" text-anchor="end" '
                     f'font-size="11" fill="#555">{_fmt_num(v)}</text>')
        for v, text in x_ticks:
            xx = self.x(v)
            p.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.top}" y2="{yb}" stroke="#f3f3f3"/>'
                     f'<text x="{xx:.1f}" y="{yb + 14}" text-anchor="middle" font-size="11" fill="#555">'
                     f'{_e(text)}</text>')
        p.append(f'<line x1="{self.left}" x2="{self.w - self.right}" y1="{yb}" y2="{yb}" stroke="#888"/>'
                 f'<line x1="{self.left}" x2="{self.left}" y1="{self.top}" y2="{yb}" stroke="#888"/>')
        p.append(f'<text x="12" y="{(self.top + yb) / 2:.0f}" font-size="11" fill="#333" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(self.top + yb) / 2:.0f})">{_e(y_label)}</text>')
        if x_label:
            p.append(f'<text x="{(self.left + self.w - self.right) / 2:.0f}" y="{self.h - 4}" font-size="11" '
                     f'fill="#333" text-anchor="middle">{_e(x_label)}</text>')

    def svg(self, title: str, cls: str = "chart") -> str:
        return (f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
                + "".join(self.parts) + "</svg>")


def _time_ticks(t0: float, t1: float) -> list[tuple[float, str]]:
    span = t1 - t0
    step = 86400.0 if span > 2 * 86400 else (6 * 3600.0 if span > 12 * 3600 else 3600.0)
    if span > 20 * 86400:
        step = 7 * 86400.0
    first = math.ceil(t0 / step) * step
    out = []
    t = first
    while t <= t1:
        d = datetime.fromtimestamp(t, UTC)
        out.append((t, d.strftime("%a %d %b") if step >= 86400 else d.strftime("%d %H:%M")))
        t += step
    return out


def spend_chart(title: str, series: Mapping[str, Mapping[int, float]], t0: float, t1: float,
                labels: Sequence[Label], marks: Sequence[tuple[Incident, str]], width: int = 1100,
                height: int = 260) -> str:
    """Hourly spend lines with label windows shaded and incidents marked (outcome colours)."""
    b0, b1 = int(t0 // SPEND_BUCKET_S), int(t1 // SPEND_BUCKET_S)
    ymax = max((v for s in series.values() for v in s.values()), default=1.0)
    f = Frame(width, height, t0, t1, 0.0, ymax * 1.12 if ymax > 0 else 1.0)
    p = f.parts
    for lb in labels:
        xa, xb = f.x(max(lb.start, t0)), f.x(min(lb.end, t1))
        # Hard negatives are often long (a whole week of support reads): a strip along the bottom,
        # so that they do not hide the incidents.
        top, height = f.top, f.h - f.top - f.bottom
        color, op = ("#ef4444", 0.16)
        if lb.negative:
            color, op, top, height = "#6b7280", 0.35, f.h - f.bottom - 8, 8
        p.append(f'<rect class="window" x="{xa:.1f}" y="{top}" width="{max(xb - xa, 2.0):.1f}" '
                 f'height="{height}" fill="{color}" fill-opacity="{op}">'
                 f'<title>{_e(lb.name)}: {_e(rfc3339(lb.start))} .. {_e(rfc3339(lb.end))}\n'
                 f'{_e(lb.description)}</title></rect>')
    f.axes(_time_ticks(t0, t1), "$ per hour")
    for i, (name, s) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{f.x(b * SPEND_BUCKET_S):.1f},{f.y(s.get(b, 0.0)):.1f}" for b in range(b0, b1 + 1))
        p.append(f'<polyline class="line" points="{pts}" fill="none" stroke="{color}" stroke-width="1.4">'
                 f'<title>{_e(name)}</title></polyline>')
    for inc, outcome in marks:
        xx = f.x(min(max(inc.detected_at, t0), t1))
        yy = f.top + 2
        color = OUTCOME_COLOR.get(outcome, "#333")
        p.append(f'<path class="mark" data-alert="{_e(inc.alert_id)}" d="M{xx - 5:.1f},{yy} L{xx + 5:.1f},{yy} '
                 f'L{xx:.1f},{yy + 9} Z" fill="{color}" stroke="#fff" stroke-width="0.5">'
                 f'<title>{_e(inc.detector)} {_e(inc.alert_id)} at {_e(rfc3339(inc.detected_at))} '
                 f'({_e(OUTCOME_TEXT.get(outcome, outcome))}): {_e(inc.first.title)}</title></path>'
                 f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{yy + 9}" y2="{f.h - f.bottom}" stroke="{color}" '
                 f'stroke-opacity="0.35" stroke-dasharray="2,3"/>')
    legend = "".join(f'<span><i class="sw" style="background:{PALETTE[i % len(PALETTE)]}"></i>{_e(n)}</span>'
                     for i, n in enumerate(series))
    return f'<h3>{_e(title)}</h3><div class="legend">{legend}</div>' + f.svg(title)


@dataclass(frozen=True)
class TradeoffPoint:
    value: str
    fp_per_day: float
    recall: float
    chosen: bool = False
    note: str = ""


def tradeoff_chart(spec: SweepSpec, points: Sequence[TradeoffPoint], target: float, width: int = 520,
                   height: int = 300) -> str:
    """Recall (y) against false alerts per day (x), one point per value, joined in value order."""
    xmax = max([p.fp_per_day for p in points] + [target]) * 1.15 or 1.0
    f = Frame(width, height, 0.0, xmax, 0.0, 1.05, bottom=40)
    f.axes([(v, _fmt_num(v)) for v in _nice_ticks(0.0, xmax)], "recall", "false alerts per day")
    p = f.parts
    tx = f.x(target)
    p.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{f.top}" y2="{f.h - f.bottom}" stroke="#d62728" '
             f'stroke-dasharray="5,4"><title>target {target:g} false alerts/day</title></line>'
             f'<text x="{tx + 4:.1f}" y="{f.h - f.bottom - 6}" font-size="11" fill="#d62728">target</text>')
    pts = " ".join(f"{f.x(q.fp_per_day):.1f},{f.y(q.recall):.1f}" for q in points)
    p.append(f'<polyline class="curve" points="{pts}" fill="none" stroke="#4e79a7" stroke-width="1.5"/>')
    merged: dict[tuple[float, float], list[TradeoffPoint]] = {}
    for q in points:  # values with the same outcome share one point and one label
        merged.setdefault((round(q.fp_per_day, 6), round(q.recall, 6)), []).append(q)
    placed: list[tuple[float, float]] = []
    for (x, y), group in merged.items():
        text = ", ".join(q.value for q in group)
        chosen = any(q.chosen for q in group)
        xx, yy = f.x(x), f.y(y)
        ty = yy - 6
        while any(abs(px - xx) < 60 and abs(py - ty) < 11 for px, py in placed):  # keep labels apart
            ty += 13
        placed.append((xx, ty))
        notes = "; ".join(f"{spec.param}={q.value}: {q.note}" for q in group if q.note)
        p.append(f'<circle class="point" cx="{xx:.1f}" cy="{yy:.1f}" r="{6 if chosen else 4}" '
                 f'fill="{"#1b9e3a" if chosen else "#4e79a7"}" stroke="#fff">'
                 f'<title>{_e(spec.param)}={_e(text)}: recall {y:.2f}, {x:.2f} false alerts/day'
                 f'{" (recommended)" if chosen else ""}\n{_e(notes)}</title></circle>'
                 f'<text x="{xx + 7:.1f}" y="{ty:.1f}" font-size="11" fill="#333">{_e(text)}</text>')
    return f'<div><h3>{_e(spec.key)}</h3>' + f.svg(f"trade-off {spec.key}") + "</div>"


# -- the document ---------------------------------------------------------------------------------


def _score_cells(ds: DetectorScore) -> str:
    cells = score_row(ds.detector, ds)
    return f'<td class="l">{_e(cells[0])}</td>' + "".join(f"<td>{_e(c)}</td>" for c in cells[1:])


def _summary(res: TuneResult) -> str:
    head = '<th class="l">detector</th>' + "".join(f"<th>{_e(h)}</th>" for h in HEADER[1:])
    rows = "".join(f"<tr>{_score_cells(ds)}</tr>" for ds in res.scores[BASELINE].values())
    recs = []
    for det, rec in res.recommendations.items():
        what = "keep (baseline)" if not rec.changed else ", ".join(f"{k}={v}" for k, v in rec.overrides.items())
        if not rec.under_target:
            what = "no setting under the target: keep (baseline)"
        recs.append(f'<tr><td class="l">{_e(det)}</td><td class="l">{_e(what)}</td>'
                    f'<td>{"-" if rec.score.recall is None else f"{rec.score.recall:.2f}"}</td>'
                    f"<td>{rec.score.fp_per_day:.2f}</td></tr>")
    return (f'<h2 id="summary">Summary</h2><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            f'<p class="note">found = labels detected / incident labels; FP = incidents matching no incident '
            f"label (hardFP: inside a hard-negative window); FP/Mev = per million events; TTD = time from the "
            f"label's start to detection; $ before = spend of the incident's events until detection; $ missed = "
            f"spend of undetected incidents.</p>"
            f"<h3>Recommended (best recall with at most {res.target_fp_per_day:g} false alerts per day)</h3>"
            f'<table><thead><tr><th class="l">detector</th><th class="l">setting</th><th>recall</th>'
            f"<th>FP/day</th></tr></thead><tbody>{''.join(recs)}</tbody></table>")


def _top(spend: Mapping[str, Mapping[int, float]], n: int) -> list[str]:
    return sorted(spend, key=lambda k: (-sum(spend[k].values()), k))[:n]


def _spend_section(run: DatasetRun) -> str:
    rec: RunRecord = run.record
    if not rec.events:
        return f"<h3>{_e(run.dataset.name)}</h3><p>no events</p>"
    t0, t1 = rec.first_ts, rec.last_ts
    marks = [(inc, run.scored.outcomes.get(inc.alert_id, "fp")) for inc in run.incidents]
    tenants = _top(rec.tenant_spend, MAX_TENANT_LINES)
    out = [spend_chart(f"{run.dataset.name}: spend per tenant (top {len(tenants)})",
                       {t: rec.tenant_spend[t] for t in tenants}, t0, t1, run.dataset.labels, marks)]
    keys: list[str] = []
    for lb in run.dataset.labels:
        if not lb.negative:
            keys.extend(k for k in _as_list(lb.entities.get("api_key_id")) if k in rec.key_spend)
    for inc in run.incidents:
        if inc.first.api_key_id and inc.first.api_key_id in rec.key_spend:
            keys.append(inc.first.api_key_id)
    keys = list(dict.fromkeys(keys))[:MAX_KEY_CHARTS]
    for key in keys:
        tenant = rec.key_tenant.get(key, "")
        lbs = [lb for lb in run.dataset.labels if key in _as_list(lb.entities.get("api_key_id"))
               or (tenant and tenant in lb.tenant_ids and not lb.entities.get("api_key_id"))]
        km = [(i, o) for i, o in marks if i.first.api_key_id == key or (i.first.api_key_id is None
                                                                         and i.tenant_id == tenant)]
        out.append(spend_chart(f"{run.dataset.name}: api key {key} ({tenant})", {key: rec.key_spend[key]}, t0, t1,
                               lbs, km, height=170))
    return "".join(out)


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else [str(x) for x in v] if isinstance(v, (list, tuple)) else []


def _tradeoffs(res: TuneResult) -> str:
    if not res.specs:
        return ('<h2 id="tradeoff">Trade-off curves</h2><p class="note">No <code>--sweep</code> was given: '
                "only the baseline was replayed.</p>")
    charts = []
    for spec in res.specs:
        pts: list[tuple[float | str, TradeoffPoint]] = []
        rec = res.recommendations.get(spec.detector)
        for s in res.settings:
            if not (s.is_baseline or (s.detector == spec.detector and set(s.overrides) <= {spec.param})):
                continue
            ds = res.scores[s.name].get(spec.detector)
            if ds is None:
                continue
            v = setting_values(s, spec, res.rules)
            chosen = rec is not None and rec.under_target and rec.setting == s.name
            note = (f"precision {'-' if ds.precision is None else f'{ds.precision:.2f}'}, TTD median "
                    f"{fmt_duration(ds.ttd_median_s)}, ${ds.usd_before_total:.2f} before detection")
            sort_key: float | str = v if isinstance(v, (int, float)) else str(v)
            pts.append((sort_key, TradeoffPoint(str(v), ds.fp_per_day, ds.recall or 0.0, chosen, note)))
        pts.sort(key=lambda p: (isinstance(p[0], str), p[0] if not isinstance(p[0], str) else 0, str(p[0])))
        charts.append(tradeoff_chart(spec, [q for _, q in pts], res.target_fp_per_day))
    return ('<h2 id="tradeoff">Trade-off curves</h2><p class="note">One point per value of the swept parameter '
            "(other parameters at the baseline); green = recommended.</p><div class=\"grid\">"
            + "".join(charts) + "</div>")


def _labels_table(res: TuneResult) -> str:
    rows = []
    for run in res.baseline:
        for lr in run.scored.labels:
            lb = lr.label
            status = '<span class="tp">detected</span>' if lr.detected else '<span class="fp">missed</span>'
            rows.append(
                f'<tr><td class="l">{_e(run.dataset.name)}</td><td class="l">{_e(lb.name)}</td>'
                f'<td class="l">{_e(rfc3339(lb.start))}</td><td class="l">{_e(rfc3339(lb.end))}</td>'
                f'<td class="l">{status}</td><td>{_e(fmt_duration(lr.ttd_s))}</td>'
                f"<td>{'-' if lr.usd_before_detection is None else f'{lr.usd_before_detection:.2f}'}</td>"
                f"<td>{lr.usd_total:.2f}</td>"
                f'<td class="l">{_e(lr.incident.alert_id) if lr.incident else ""}</td>'
                f'<td class="l w">{_e(lb.description[:300])}</td></tr>')
    return ('<h2 id="labels">Incident labels</h2><div class="scroll"><table><thead><tr><th class="l">dataset</th>'
            '<th class="l">label</th>'
            '<th class="l">start</th><th class="l">end</th><th class="l">result</th><th>TTD</th><th>$ before</th>'
            '<th>$ window</th><th class="l">first alert</th><th class="l">description</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _alerts_table(res: TuneResult) -> str:
    rows = []
    n = 0
    for run in res.baseline:
        for inc in run.incidents:
            n += 1
            if n > MAX_ALERT_ROWS:
                break
            outcome = run.scored.outcomes.get(inc.alert_id, "fp")
            label = run.scored.label_of.get(inc.alert_id, "")
            a = inc.first
            signals = ", ".join(f"{k} {v:.2f}" for k, v in sorted(a.signals.items(), key=lambda kv: -kv[1]))
            evidence = json.dumps(inc.last.evidence, indent=1, sort_keys=True, default=str)
            search = " ".join([inc.alert_id, inc.detector, a.entity.type, a.entity.id, a.tenant_id, outcome,
                               OUTCOME_TEXT.get(outcome, ""), label, a.title, run.dataset.name]).lower()
            rows.append(
                f'<tr data-search="{_e(search)}"><td class="l">{_e(run.dataset.name)}</td>'
                f'<td class="l">{_e(rfc3339(inc.detected_at))}</td><td class="l">{_e(inc.detector)}</td>'
                f'<td class="l">{_e(a.entity.type)}:{_e(a.entity.id)}<br><span class="note">{_e(a.tenant_id)}'
                f'</span></td><td class="l">{_e(inc.max_severity)}</td><td>{inc.max_score:.2f}</td>'
                f'<td class="l {outcome}">{_e(OUTCOME_TEXT.get(outcome, outcome))}'
                f'<br><span class="note">{_e(label)}</span></td>'
                f'<td class="l w">{_e(a.title)}<br><span class="note">{_e(signals)}</span></td>'
                f'<td class="l w"><details><summary>{inc.versions} version(s); evidence</summary>'
                f'<pre>{_e(evidence)}</pre></details><span class="note">{_e(inc.alert_id)}</span></td></tr>')
    more = f'<p class="note">first {MAX_ALERT_ROWS} of {n} incidents</p>' if n > MAX_ALERT_ROWS else ""
    return ('<h2 id="alerts">Alerts</h2><input id="alert-filter" type="search" placeholder="filter: detector, '
            'tenant, outcome (fp, tp), alert id ..."> <span id="alert-count" class="note"></span>'
            '<div class="scroll"><table id="alerts"><thead><tr><th class="l">dataset</th><th class="l">detected</th>'
            '<th class="l">detector</th><th class="l">entity</th><th class="l">max severity</th><th>max score</th>'
            '<th class="l">outcome</th><th class="l">title, signals</th><th class="l">evidence</th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table></div>" + more)


def render_report(res: TuneResult, step: Callable[[str], None] | None = None) -> str:
    """The whole HTML document as a string."""
    tick = step or (lambda _s: None)
    days = sum(r.record.days for r in res.baseline)
    events = sum(r.record.events for r in res.baseline)
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{_e(OUTCOME_TEXT[o])}</span>'
                     for o, c in OUTCOME_COLOR.items())
    legend += ('<span><i class="sw" style="background:#ef4444;opacity:.35"></i>incident label window</span>'
               '<span><i class="sw" style="background:#6b7280;opacity:.5"></i>hard-negative window '
               '(strip at the bottom)</span>')
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>sentinel tuning report</title><style>", CSS, "</style></head><body>",
        "<header><h1>sentinel tuning report</h1>",
        f"<p>{len(res.datasets)} dataset(s): {_e(', '.join(d.name for d in res.datasets))} &middot; {events:,} "
        f"events &middot; {days:.1f} days of event time &middot; {len(res.settings)} setting(s) &middot; rules "
        f"{_e(res.rules.source)} &middot; target {res.target_fp_per_day:g} false alerts/day</p></header><main>",
        '<nav><a href="#summary">Summary</a> &middot; <a href="#spend">Spend</a> &middot; <a href="#tradeoff">'
        'Trade-off</a> &middot; <a href="#labels">Labels</a> &middot; <a href="#alerts">Alerts</a></nav>',
    ]
    parts.append(_summary(res))
    tick("summary")
    parts.append(f'<h2 id="spend">Spend over time</h2><div class="legend">{legend}</div>'
                 '<p class="note">Triangles mark incidents at their detection time (click one to filter the alert '
                 "table); hover for details.</p>")
    for run in res.baseline:
        parts.append(_spend_section(run))
        tick(f"spend {run.dataset.name}")
    parts.append(_tradeoffs(res))
    tick("trade-off")
    parts.append(_labels_table(res))
    parts.append(_alerts_table(res))
    tick("alerts")
    parts.append("</main><script>" + JS + "</script></body></html>\n")
    return "".join(parts)


def write_report(res: TuneResult, path: str | Path, progress: Progress | None = None) -> None:
    def step(_name: str) -> None:
        if progress is not None:
            progress.update(1)

    Path(path).write_text(render_report(res, step), encoding="utf-8")

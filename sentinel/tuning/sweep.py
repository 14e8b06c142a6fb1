"""Threshold sweeps: replay labelled datasets under several settings and recommend one per detector.

A *setting* is the rules as given (``baseline``) or the rules with some of one
detector's parameters overridden (``--sweep spend_spike.fire_score=0.4,0.6``).
Detectors are independent -- each sees every event, and the incident book
keys incidents by detector -- so a setting of detector D replays with D alone
enabled: its alerts are exactly D's alerts in a full run, at a fraction of
the cost. The baseline runs every enabled detector, with a
:class:`~sentinel.tuning.scoring.CostRecorder` riding along for the dollars
and the spend series.

Runs are independent too, so with more than one of them they go to a
``ProcessPoolExecutor``. The recommendation for each detector is the setting
with the best recall among those whose false alerts per day stay at or under
the target; ties go to fewer false alerts, then faster detection, then the
baseline (no change without a reason).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import yaml
from pydantic import ValidationError

from detectors.base import DetectorParams, Severity
from sentinel.alerts import Alert, encode_alert
from sentinel.pipeline import Pipeline, PipelineOptions, build_detectors
from sentinel.rules import DetectorRule, RuleSet, load_rules
from sentinel.sources.files import batches
from sentinel.tuning.labels import Dataset, apply_tenants, load_tenants_table
from sentinel.tuning.scoring import (
    CostRecorder,
    DetectorScore,
    Incident,
    RunRecord,
    Scored,
    incidents_from_alerts,
    merge_scores,
    score,
)

BASELINE = "baseline"
MAX_SETTINGS = 256


class SweepError(ValueError):
    """A ``--sweep`` that cannot be applied (unknown detector or parameter, invalid value)."""


@dataclass(frozen=True)
class SweepSpec:
    detector: str
    param: str
    values: tuple[Any, ...]

    @property
    def key(self) -> str:
        return f"{self.detector}.{self.param}"


_SPEC = re.compile(r"^(?P<det>[a-z_][a-z0-9_]*)\.(?P<param>[a-z_][a-z0-9_]*)=(?P<values>.+)$")


def _split_values(text: str) -> list[str]:
    """Comma-separated values; commas inside [...] belong to a list value."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_sweep(text: str, rules: RuleSet) -> SweepSpec:
    """``detector.param=v1,v2,...`` checked against the detector's ``Params`` (each value validated).

    >>> from sentinel.rules import load_rules
    >>> parse_sweep("retry_storm.max_keys=10,20,10", load_rules(None)).values
    (10, 20)
    """
    m = _SPEC.match(text.strip())
    if not m:
        raise SweepError(f"--sweep {text!r}: expected detector.param=v1,v2,...")
    det, param = m["det"], m["param"]
    rule = rules.detectors.get(det)
    if rule is None:
        raise SweepError(f"--sweep {text!r}: no detector {det!r}; known: {', '.join(sorted(rules.detectors))}")
    fields = type(rule.params).model_fields
    if param not in fields:
        raise SweepError(f"--sweep {text!r}: {det} has no parameter {param!r}; known: {', '.join(sorted(fields))}")
    values = []
    for raw in _split_values(m["values"]):
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        try:
            checked = type(rule.params).model_validate({**rule.params.model_dump(), param: value})
        except ValidationError as err:
            msg = "; ".join(e["msg"] for e in err.errors())
            raise SweepError(f"--sweep {text!r}: {det}.{param}={raw}: {msg}") from None
        values.append(getattr(checked, param))
    if not values:
        raise SweepError(f"--sweep {text!r}: no values")
    return SweepSpec(det, param, tuple(dict.fromkeys(values)))


@dataclass(frozen=True)
class Setting:
    """One configuration to replay: ``overrides`` of one detector's parameters (none for the baseline)."""

    name: str
    detector: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return self.detector is None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def build_settings(specs: Sequence[SweepSpec], rules: RuleSet, grid: bool = False) -> list[Setting]:
    """The baseline, then one setting per swept value (per detector: one parameter at a time, or the grid).

    A value equal to the baseline's is not replayed twice: the baseline stands for it.
    """
    out = [Setting(BASELINE)]
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    by_det: dict[str, list[SweepSpec]] = {}
    for s in specs:
        by_det.setdefault(s.detector, []).append(s)
    for det, det_specs in by_det.items():
        base = rules.detectors[det].params
        if grid:
            combos: Iterable[tuple[tuple[str, Any], ...]] = itertools.product(
                *[[(s.param, v) for v in s.values] for s in det_specs])
        else:
            combos = [((s.param, v),) for s in det_specs for v in s.values]
        for combo in combos:
            over = {p: v for p, v in combo if getattr(base, p) != v}
            if not over:
                continue
            key = (det, tuple(sorted((p, _fmt(v)) for p, v in over.items())))
            if key in seen:
                continue
            seen.add(key)
            name = det + "." + ",".join(f"{p}={_fmt(v)}" for p, v in over.items())
            out.append(Setting(name, det, over))
    if len(out) > MAX_SETTINGS:
        raise SweepError(f"{len(out)} settings to replay (more than {MAX_SETTINGS}): sweep fewer values")
    return out


def setting_values(setting: Setting, spec: SweepSpec, rules: RuleSet) -> Any:
    """The value of ``spec``'s parameter in ``setting`` (the baseline's value when not overridden)."""
    if setting.detector == spec.detector and spec.param in setting.overrides:
        return setting.overrides[spec.param]
    return getattr(rules.detectors[spec.detector].params, spec.param)


def apply_setting(rules: RuleSet, setting: Setting) -> RuleSet:
    """``rules`` with the setting applied; a detector setting leaves only that detector enabled.

    Per-tenant parameter sets follow the override where they had the baseline's value.
    """
    if setting.detector is None:
        return rules
    rule = rules.detectors[setting.detector]
    params = _override(rule.params, rule.params, setting.overrides)
    tenant_params = {t: _override(p, rule.params, setting.overrides) for t, p in rule.tenant_params.items()}
    detectors: dict[str, DetectorRule] = {}
    for name, r in rules.detectors.items():
        if name == setting.detector:
            detectors[name] = replace(r, params=params, tenant_params=tenant_params, enabled=True)
        else:
            detectors[name] = replace(r, enabled=False)
    return replace(rules, detectors=detectors)


def _override(params: DetectorParams, base: DetectorParams, overrides: Mapping[str, Any]) -> DetectorParams:
    update = {k: v for k, v in overrides.items() if getattr(params, k) == getattr(base, k)}
    return type(params).model_validate({**params.model_dump(), **update}) if update else params


# -- running --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    dataset: int
    setting: int
    inputs: tuple[str, ...]
    rules: RuleSet
    record: bool
    dataset_obj: Dataset
    lateness_s: float = 30.0
    grace_s: float = 3600.0


@dataclass
class JobResult:
    dataset: int
    setting: int
    alerts: list[bytes]
    record: RunRecord | None
    lines: int
    rejected: int


def run_job(job: Job) -> JobResult:
    """Replay one dataset under one setting (in a worker process or in place)."""
    rules = job.rules
    detectors = build_detectors(rules)
    recorder = None
    if job.record:
        recorder = CostRecorder(job.dataset_obj.labels, rules.context(), job.grace_s)
        detectors.append(recorder)
    pipeline = Pipeline(rules, PipelineOptions(lateness_s=job.lateness_s), detectors=detectors)
    alerts: list[Alert] = []
    for batch in batches(list(job.inputs)):
        alerts.extend(pipeline.feed(batch.lines, batch.source, batch.positions).alerts)
    alerts.extend(pipeline.drain())
    return JobResult(job.dataset, job.setting, [encode_alert(a) for a in alerts],
                     recorder.record() if recorder is not None else None,
                     pipeline.stats.lines, pipeline.stats.rejected_total)


def dataset_rules(rules: RuleSet, ds: Dataset) -> RuleSet:
    return apply_tenants(rules, load_tenants_table(ds.tenants)) if ds.tenants else rules


@dataclass
class DatasetRun:
    """The baseline run of one dataset: alerts, incidents, what was recorded, and its score."""

    dataset: Dataset
    alerts: list[Alert]
    incidents: list[Incident]
    record: RunRecord
    scored: Scored
    lines: int = 0
    rejected: int = 0


@dataclass
class TuneResult:
    datasets: list[Dataset]
    settings: list[Setting]
    specs: list[SweepSpec]
    scores: dict[str, dict[str, DetectorScore]]
    baseline: list[DatasetRun]
    recommendations: dict[str, Recommendation]
    rules: RuleSet
    target_fp_per_day: float
    min_severity: Severity
    grace_s: float


@dataclass(frozen=True)
class Recommendation:
    detector: str
    setting: str
    overrides: Mapping[str, Any]
    score: DetectorScore
    under_target: bool

    @property
    def changed(self) -> bool:
        return bool(self.overrides)


def tune(datasets: Sequence[Dataset], rules: RuleSet, specs: Sequence[SweepSpec] = (), *, grid: bool = False,
         target_fp_per_day: float = 1.0, min_severity: Severity = "info", grace_s: float = 3600.0,
         lateness_s: float = 30.0, workers: int | None = None,
         on_done: Callable[[JobResult], None] | None = None) -> TuneResult:
    """Replay every dataset under every setting, score, and recommend (see the module docstring)."""
    settings = build_settings(specs, rules, grid)
    jobs = []
    for si, setting in enumerate(settings):
        for di, ds in enumerate(datasets):
            jobs.append(Job(di, si, ds.inputs, apply_setting(dataset_rules(rules, ds), setting), si == 0, ds,
                            lateness_s, grace_s))
    n = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    results: dict[tuple[int, int], JobResult] = {}
    if n <= 1 or len(jobs) == 1:
        for job in jobs:
            res = run_job(job)
            results[(job.dataset, job.setting)] = res
            if on_done is not None:
                on_done(res)
    else:
        with ProcessPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(run_job, job) for job in jobs]
            for fut in as_completed(futures):
                res = fut.result()
                results[(res.dataset, res.setting)] = res
                if on_done is not None:
                    on_done(res)
    decoder = msgspec.json.Decoder(Alert)
    baseline: list[DatasetRun] = []
    records: list[RunRecord] = []
    for di, ds in enumerate(datasets):
        res = results[(di, 0)]
        assert res.record is not None
        alerts = [decoder.decode(b) for b in res.alerts]
        incidents = incidents_from_alerts(alerts, min_severity, ds.name)
        enabled = [d.detector for d in rules.enabled_detectors()]
        scored = score(incidents, ds.labels, res.record, enabled, grace_s)
        baseline.append(DatasetRun(ds, alerts, incidents, res.record, scored, res.lines, res.rejected))
        records.append(res.record)
    scores: dict[str, dict[str, DetectorScore]] = {BASELINE: merge_scores(r.scored.by_detector for r in baseline)}
    for si, setting in enumerate(settings[1:], start=1):
        assert setting.detector is not None
        parts = []
        for di, ds in enumerate(datasets):
            res = results[(di, si)]
            alerts = [decoder.decode(b) for b in res.alerts]
            incidents = incidents_from_alerts(alerts, min_severity, ds.name)
            sc = score(incidents, ds.labels, records[di], [setting.detector], grace_s)
            parts.append({setting.detector: sc.by_detector[setting.detector]})
        scores[setting.name] = merge_scores(parts)
    recs = recommend(settings, scores, target_fp_per_day)
    return TuneResult(list(datasets), settings, list(specs), scores, baseline, recs, rules, target_fp_per_day,
                      min_severity, grace_s)


def recommend(settings: Sequence[Setting], scores: Mapping[str, Mapping[str, DetectorScore]],
              target_fp_per_day: float) -> dict[str, Recommendation]:
    """Per detector: best recall with FP/day <= target; ties: fewer FP/day, faster detection, the baseline."""
    out: dict[str, Recommendation] = {}
    for det, base_score in scores[BASELINE].items():
        candidates = [(settings[0], base_score)]
        candidates += [(s, scores[s.name][det]) for s in settings[1:] if s.detector == det]

        def key(c: tuple[Setting, DetectorScore]) -> tuple[float, float, float, int]:
            s, ds = c
            ttd = ds.ttd_median_s
            return (-(ds.recall or 0.0), ds.fp_per_day, ttd if ttd is not None else float("inf"),
                    0 if s.is_baseline else 1)

        under = [c for c in candidates if c[1].fp_per_day <= target_fp_per_day]
        if under:
            best = min(under, key=key)
            out[det] = Recommendation(det, best[0].name, dict(best[0].overrides), best[1], True)
        else:  # nothing meets the target: say so, and keep the rules as they are
            out[det] = Recommendation(det, BASELINE, {}, base_score, False)
    return out


# -- writing the recommended rules ----------------------------------------------------------------


def _yaml_value(v: Any) -> str:
    if isinstance(v, tuple):
        v = list(v)
    text: str = yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def write_rules(source: str | Path | None, out: str | Path, recs: Mapping[str, Recommendation]) -> list[Path]:
    """Copy the rules directory ``source`` to ``out`` with the recommended parameters set.

    Existing ``detectors/<name>.yaml`` files keep their comments: a top-level
    ``param: value`` line is rewritten in place, a missing one is appended.
    The result is validated with :func:`load_rules`. Returns the files changed.
    """
    dest = Path(out)
    if source is not None and Path(source).resolve() == dest.resolve():
        raise SweepError(f"--write-rules {dest}: refusing to overwrite the rules being tuned")
    if source is not None:
        shutil.copytree(source, dest, dirs_exist_ok=True)
    (dest / "detectors").mkdir(parents=True, exist_ok=True)
    changed = []
    for det, rec in sorted(recs.items()):
        if not rec.changed:
            continue
        path = dest / "detectors" / f"{det}.yaml"
        lines = path.read_text().splitlines() if path.exists() else [
            f"# {det}: parameters recommended by sentinel tune"]
        for param, value in rec.overrides.items():
            pat = re.compile(rf"^{re.escape(param)}\s*:\s*(?P<val>[^#]*?)(?P<comment>\s+#.*)?$")
            new = f"{param}: {_yaml_value(value)}"
            for i, line in enumerate(lines):
                m = pat.match(line)
                if m:
                    lines[i] = new + (m["comment"] or "") + "  # tuned by sentinel tune"
                    break
            else:
                lines.append(new + "  # tuned by sentinel tune")
        path.write_text("\n".join(lines) + "\n")
        changed.append(path)
    check = load_rules(dest)
    for det, rec in recs.items():
        for param, value in rec.overrides.items():
            got = getattr(check.detectors[det].params, param)
            if got != value:
                raise SweepError(f"{dest}: {det}.{param} reads back as {got!r}, expected {value!r}")
    return changed

"""``sentinel tune``: replay labelled history under several settings and recommend thresholds.

Datasets come either from ``INPUT... --labels LABELS`` (one labels file: the
inputs are one stream; as many labels files as inputs: one dataset per input,
paired in order) or from ``--scenarios DIR`` (every ``<name>.jsonl.gz`` with its
``<name>.labels.json`` and ``<name>.tenants.json``). Each setting -- the rules
as given, and every value of every ``--sweep detector.param=v1,v2`` -- is
replayed through the daemon's pipeline (several processes when there are
many runs) and scored against the labels (definitions in
:mod:`sentinel.tuning.scoring`). Prints the table; recommends per detector the
setting with the best recall whose false alerts per day stay under
``--target-fp-per-day``; ``--write-rules DIR`` writes the rules with those
settings, ``--report FILE`` the HTML report, ``--json FILE`` every number.
Exit status: 0 when it ran, 2 on unusable input, rules, labels or sweeps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from detectors.base import SEVERITIES
from sentinel.commands.replay import resolve_rules
from sentinel.progress import Progress
from sentinel.rules import RuleSet
from sentinel.sources.files import InputError
from sentinel.tuning.labels import Dataset, LabelError, load_labels, scenario_datasets
from sentinel.tuning.report import render_text
from sentinel.tuning.sweep import (
    JobResult,
    SweepError,
    TuneResult,
    build_settings,
    parse_sweep,
    tune,
    write_rules,
)
from sentinel.yamlfile import RulesFileError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tune", help="score alerts against labelled incidents; sweep thresholds and recommend settings",
        description="Replay labelled usage events under the given rules and under every swept parameter value, "
        "score the alerts against the labels per detector (precision, recall, false alerts per day and per "
        "million events, time to detect, dollars spent before detection) and recommend a setting per detector.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help=".jsonl or .jsonl.gz usage events")
    p.add_argument("--labels", action="append", default=[], metavar="LABELS",
                   help="labels JSON (once for all inputs, or once per input in the same order)")
    p.add_argument("--tenants", action="append", default=[], metavar="TENANTS",
                   help="generator tenants table laid over the rules (tenants, budgets); once or once per input")
    p.add_argument("--scenarios", metavar="DIR",
                   help="replay every <name>.jsonl.gz + <name>.labels.json (+ <name>.tenants.json) in DIR")
    p.add_argument("--only", default="", metavar="NAMES", help="with --scenarios: comma-separated scenario names")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: ./rules if present, else built-ins)")
    p.add_argument("--sweep", action="append", default=[], metavar="DETECTOR.PARAM=V1,V2,...",
                   help="values of one detector parameter to try (repeatable)")
    p.add_argument("--grid", action="store_true",
                   help="try every combination of one detector's swept parameters (default: one at a time)")
    p.add_argument("--target-fp-per-day", type=float, default=1.0, metavar="N",
                   help="false alerts per day a recommended setting may raise (default 1)")
    p.add_argument("--min-severity", choices=SEVERITIES, default="info",
                   help="count an incident once it reaches this severity (default info: every alert)")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="an alert up to this long after a label's end still detects it (default 3600)")
    p.add_argument("--lateness", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="worker processes (default: CPU count)")
    p.add_argument("--write-rules", metavar="DIR", help="write the rules with the recommended settings to DIR")
    p.add_argument("--report", metavar="FILE.html", help="write the self-contained HTML report")
    p.add_argument("--json", metavar="FILE", help="write every number as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=run)


def _paired(values: list[str], inputs: list[str], what: str) -> list[str | None]:
    if not values:
        return [None]
    if len(values) == 1:
        return [values[0]]
    if len(values) != len(inputs):
        raise LabelError(f"{len(values)} {what} files for {len(inputs)} inputs: give one, or one per input")
    return list(values)


def datasets_from_args(args: argparse.Namespace) -> list[Dataset]:
    if args.scenarios:
        if args.inputs or args.labels:
            raise LabelError("give either --scenarios DIR or INPUT... --labels, not both")
        only = [n for n in args.only.split(",") if n]
        return scenario_datasets(args.scenarios, only)
    if not args.inputs:
        raise LabelError("no input: give INPUT... --labels LABELS, or --scenarios DIR")
    if not args.labels:
        raise LabelError("--labels is required with INPUT...")
    for path in args.inputs:
        if not Path(path).is_file():
            raise LabelError(f"{path}: no such file")
    labels = _paired(args.labels, args.inputs, "--labels")
    tenants = _paired(args.tenants, args.inputs, "--tenants")
    if len(labels) == 1:
        assert labels[0] is not None
        return [Dataset(Path(args.inputs[0]).name, tuple(args.inputs), tuple(load_labels(labels[0])), tenants[0])]
    out = []
    for i, path in enumerate(args.inputs):
        lab = labels[i]
        assert lab is not None
        ten = tenants[i] if len(tenants) > 1 else tenants[0]
        out.append(Dataset(Path(path).name, (path,), tuple(load_labels(lab)), ten))
    return out


def as_json(res: TuneResult) -> dict[str, Any]:
    return {
        "datasets": [{"name": d.name, "inputs": list(d.inputs), "labels": len(d.labels), "tenants": d.tenants}
                     for d in res.datasets],
        "target_fp_per_day": res.target_fp_per_day,
        "min_severity": res.min_severity,
        "grace_s": res.grace_s,
        "settings": [{"name": s.name, "detector": s.detector, "overrides": dict(s.overrides)} for s in res.settings],
        "scores": {name: {d: s.as_dict() for d, s in per.items()} for name, per in res.scores.items()},
        "labels": [
            {"dataset": run.dataset.name, "label": lr.label.name, "detector": lr.label.detector,
             "detected": lr.detected, "alert_id": lr.incident.alert_id if lr.incident else None,
             "ttd_s": lr.ttd_s, "usd_before_detection": lr.usd_before_detection, "usd_total": lr.usd_total}
            for run in res.baseline for lr in run.scored.labels
        ],
        "recommendations": {d: {"setting": r.setting, "overrides": dict(r.overrides), "under_target": r.under_target,
                                "score": r.score.as_dict()} for d, r in res.recommendations.items()},
    }


def run(args: argparse.Namespace) -> int:
    try:
        rules = resolve_rules(args.rules)
    except RulesFileError as err:
        print(f"sentinel tune: cannot load rules:\n{err}", file=sys.stderr)
        return 2
    try:
        datasets = datasets_from_args(args)
        specs = [parse_sweep(s, rules) for s in args.sweep]
    except (LabelError, SweepError) as err:
        print(f"sentinel tune: {err}", file=sys.stderr)
        return 2
    try:
        runs = len(build_settings(specs, rules, args.grid)) * len(datasets)
    except SweepError as err:
        print(f"sentinel tune: {err}", file=sys.stderr)
        return 2
    progress = Progress("tune", total=runs, unit="run", enabled=not args.no_progress)

    def done(res: JobResult) -> None:
        progress.update(1, events=res.lines)

    try:
        result = tune(datasets, rules, specs, grid=args.grid, target_fp_per_day=args.target_fp_per_day,
                      min_severity=args.min_severity, grace_s=args.grace, lateness_s=args.lateness,
                      workers=args.jobs, on_done=done)
    except (InputError, LabelError) as err:
        progress.close()
        print(f"sentinel tune: {err}", file=sys.stderr)
        return 2
    progress.close()
    sys.stdout.write(render_text(result))
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(result), indent=2) + "\n")
    if args.write_rules:
        try:
            source = None if rules.source == RuleSet().source else rules.source
            changed = write_rules(source, args.write_rules, result.recommendations)
        except (SweepError, RulesFileError, OSError) as err:
            print(f"sentinel tune: cannot write rules: {err}", file=sys.stderr)
            return 2
        print(f"\nrecommended rules written to {args.write_rules} ({len(changed)} detector file(s) changed)")
    if args.report:
        from sentinel.tuning.report import write_report

        rprog = Progress("report", total=None, unit="step", enabled=not args.no_progress)
        write_report(result, args.report, progress=rprog)
        rprog.close()
        print(f"report written to {args.report}")
    return 0

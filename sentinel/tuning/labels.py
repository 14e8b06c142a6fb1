"""Labels of incident windows, and the datasets (events + labels + tenants) that tuning replays.

A labels file (``replay_data/*.labels.json``, written by
``replay_data/generate.py``) is a JSON list of windows::

    {"detector": "spend_spike", "kind": "llmjacking" | "negative:<why>",
     "start": RFC 3339, "end": RFC 3339,
     "entities": {"tenant_id": ..., "api_key_id": ..., "session_id": ..., "budget": {...}, ...},
     "description": "...", "also_expected": ["quota_burn"]}

A *positive* label is an incident its detector should alert on; a label whose
kind starts with ``negative:`` is a hard negative: traffic that looks like an
incident and is not (a nightly batch, a key rotation). ``also_expected``
names other detectors whose alerts on the same entities are legitimate too
(an LLMjacking spike also burns the budget): they are neither true nor false
alerts of those detectors.

An entity value may be a string, a list of strings (several IPs) or, for a
budget, a mapping with its ``name``. :meth:`Label.relates` decides whether an
alert is about the label's entities; :meth:`Label.event_scope` which events
are "the incident's" when adding up what it cost.

A tenants table (``*.tenants.json`` from the generator: tenants with time
zone and ``cross_tenant_allowed``, and suggested budgets) is laid over the
rules with :func:`apply_tenants`, so a scenario replays with the tenants and
budgets it was generated for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sentinel.alerts import Alert
from sentinel.rules import Budget, BudgetsFile, RuleSet, TenantRules, TenantsFile

# Event fields that can scope "the incident's events", most specific first.
_SCOPE_FIELDS = ("session_id", "api_key_id", "tenant_id")


class LabelError(ValueError):
    """A labels or tenants file that cannot be used; the message names the file and the entry."""


def parse_time(value: str) -> float:
    """RFC 3339 (``Z`` or an offset) to epoch seconds.

    >>> parse_time("2026-11-02T00:00:00.000Z")
    1793577600.0
    """
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {value!r}")
    return dt.timestamp()


def _strings(value: Any) -> list[str]:
    """The id strings inside an entity value (a string, a list, or a budget mapping)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [str(value["name"])] if "name" in value else [str(v) for v in value.values() if isinstance(v, str)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


@dataclass(frozen=True)
class Label:
    """One labelled window (see the module docstring)."""

    detector: str
    kind: str
    start: float
    end: float
    entities: Mapping[str, Any]
    description: str = ""
    also_expected: tuple[str, ...] = ()
    index: int = 0
    source: str = ""

    @property
    def negative(self) -> bool:
        return self.kind.startswith("negative:")

    @property
    def name(self) -> str:
        """Short stable name for tables: ``spend_spike:llmjacking#3``."""
        return f"{self.detector}:{self.kind}#{self.index}"

    @property
    def tenant_ids(self) -> frozenset[str]:
        return frozenset(_strings(self.entities.get("tenant_id")))

    @property
    def ids(self) -> frozenset[str]:
        """Every other entity id of the label (keys, sessions, users, prefixes, budget names ...)."""
        out: set[str] = set()
        for key, value in self.entities.items():
            if key != "tenant_id":
                out.update(_strings(value))
        return frozenset(out)

    def covers(self, t: float, grace_s: float = 0.0) -> bool:
        return self.start <= t <= self.end + grace_s

    def relates(self, alert: Alert) -> bool:
        """Whether ``alert`` is about this label's entities.

        Same tenant, or the alert's entity / api key / session is one of the
        label's ids (a feature entity ``key|feature`` or a family ``tenant/family``
        counts by its parts). A label without a tenant (a shared prompt shape)
        also matches on the string values of the alert's evidence.
        """
        tenants = self.tenant_ids
        if alert.tenant_id in tenants:
            return True
        ids = self.ids
        if not ids:
            return False
        eid = alert.entity.id
        candidates = {eid, alert.api_key_id, alert.session_id}
        for sep in ("|", "/", "\x1e", ":"):
            if sep in eid:
                candidates.update(eid.split(sep))
        if not ids.isdisjoint(candidates):
            return True
        if not tenants:
            return not ids.isdisjoint(_evidence_strings(alert.evidence))
        return False

    def event_scope(self) -> tuple[str, frozenset[str], frozenset[str] | None]:
        """(event field, accepted values, accepted features or None): which events are the incident's.

        The most specific of session, api key, tenant (a tenant budget scopes
        by its tenant, a key budget by its key); a ``feature`` entity narrows it.
        """
        feats = _strings(self.entities.get("feature"))
        features = frozenset(feats) if feats else None
        for f in _SCOPE_FIELDS:
            values = _strings(self.entities.get(f))
            if values:
                return f, frozenset(values), features
        budget = self.entities.get("budget")
        if isinstance(budget, Mapping) and budget.get("id"):
            f = "api_key_id" if budget.get("scope") == "api_key" else "tenant_id"
            return f, frozenset([str(budget["id"])]), features
        return "tenant_id", frozenset(), features


def _evidence_strings(evidence: Mapping[str, Any], limit: int = 200) -> set[str]:
    out: set[str] = set()
    stack: list[Any] = [evidence]
    while stack and len(out) < limit:
        v = stack.pop()
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, Mapping):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return out


def load_labels(path: str | Path) -> list[Label]:
    """Read a labels file; errors name the file and the entry."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise LabelError(f"{p}: cannot read labels: {err}") from None
    if not isinstance(data, list):
        raise LabelError(f"{p}: expected a JSON list of labels")
    out = []
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise LabelError(f"{p}: label {i}: expected an object")
        try:
            label = Label(
                detector=str(raw["detector"]),
                kind=str(raw["kind"]),
                start=parse_time(str(raw["start"])),
                end=parse_time(str(raw["end"])),
                entities=dict(raw.get("entities") or {}),
                description=str(raw.get("description", "")),
                also_expected=tuple(str(d) for d in raw.get("also_expected") or ()),
                index=i,
                source=str(p),
            )
        except KeyError as err:
            raise LabelError(f"{p}: label {i}: missing field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise LabelError(f"{p}: label {i}: {err}") from None
        if label.end < label.start:
            raise LabelError(f"{p}: label {i}: end {raw['end']} is before start {raw['start']}")
        out.append(label)
    return out


# -- datasets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One stream to replay: its input files (read in order as one stream), labels and tenants table."""

    name: str
    inputs: tuple[str, ...]
    labels: tuple[Label, ...] = ()
    tenants: str | None = None

    def positives(self) -> list[Label]:
        return [lb for lb in self.labels if not lb.negative]


def scenario_datasets(directory: str | Path, only: Iterable[str] = ()) -> list[Dataset]:
    """Every ``<name>.jsonl.gz`` (or ``.jsonl``) with a ``<name>.labels.json`` next to it, sorted by name.

    A ``<name>.tenants.json`` next to them is used as the dataset's tenants table.
    """
    root = Path(directory)
    if not root.is_dir():
        raise LabelError(f"{root}: no such directory")
    wanted = set(only)
    out = []
    for events in sorted([*root.glob("*.jsonl.gz"), *root.glob("*.jsonl")]):
        name = events.name.removesuffix(".gz").removesuffix(".jsonl")
        if wanted and name not in wanted:
            continue
        labels = root / f"{name}.labels.json"
        if not labels.is_file():
            continue
        tenants = root / f"{name}.tenants.json"
        out.append(Dataset(name, (str(events),), tuple(load_labels(labels)),
                           str(tenants) if tenants.is_file() else None))
    if not out:
        raise LabelError(f"{root}: no <name>.jsonl[.gz] with a <name>.labels.json next to it")
    return out


@dataclass(frozen=True)
class TenantsTable:
    """What a generator's tenants file says about tenants and budgets."""

    tenants: Mapping[str, TenantRules] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()


def load_tenants_table(path: str | Path) -> TenantsTable:
    """Read ``*.tenants.json``: ``{"tenants": [{tenant_id, timezone, cross_tenant_allowed}], "budgets": [...]}``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise LabelError(f"{p}: cannot read tenants table: {err}") from None
    if not isinstance(data, dict):
        raise LabelError(f"{p}: expected a JSON object with 'tenants' and 'budgets'")
    tenants: dict[str, TenantRules] = {}
    try:
        for i, row in enumerate(data.get("tenants") or []):
            tid = row.get("tenant_id")
            if not tid:
                raise LabelError(f"{p}: tenants[{i}]: missing tenant_id")
            tenants[str(tid)] = TenantRules(timezone=row.get("timezone"),
                                            cross_tenant_allowed=bool(row.get("cross_tenant_allowed", False)))
        budgets = tuple(Budget.model_validate({k: v for k, v in b.items() if k in Budget.model_fields})
                        for b in data.get("budgets") or [])
    except (AttributeError, TypeError, ValueError) as err:
        raise LabelError(f"{p}: {err}") from None
    return TenantsTable(tenants, budgets)


def apply_tenants(rules: RuleSet, table: TenantsTable) -> RuleSet:
    """``rules`` with the table's tenants and budgets laid over (the table wins on equal id/name)."""
    tf = rules.tenants
    tenants = TenantsFile(default_timezone=tf.default_timezone, business_hours=tf.business_hours,
                          tenants={**tf.tenants, **table.tenants})
    by_name = {b.name: b for b in rules.budgets.budgets}
    by_name.update({b.name: b for b in table.budgets})
    budgets = BudgetsFile(budgets=tuple(by_name.values()))
    return replace(rules, tenants=tenants, budgets=budgets)

"""The rules directory, parsed once into typed, frozen settings.

Layout (every file optional; a missing file means the built-in defaults):

* ``tenants.yaml`` -- ``default_timezone``, ``business_hours``, ``tenants``
* ``budgets.yaml`` -- ``budgets: [{name, scope, id, limit_usd | limit_tokens, period}]``
* ``prices.yaml`` -- ``fallback`` and ``models``: $ per 1M tokens
* ``alerting.yaml`` -- severity thresholds, resolve/update timing (:class:`AlertPolicy`)
* ``routes.yaml`` -- which alerts go to which sinks, and static silences
* ``detectors/<name>.yaml`` -- one file per detector: ``enabled``, ``rule``
  (name used in alerts), the detector's parameters, and ``tenants:`` with
  per-tenant overrides of those parameters.

:func:`load_rules` collects *every* problem it finds, each naming the file,
the line and the field, and raises :class:`RulesFileError` with all of them;
``sentinel check-rules`` prints them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detectors import registry
from detectors.base import BudgetInfo, DetectorContext, DetectorParams, TenantInfo
from sentinel.calendar import WEEKDAYS, TenantCalendar, WorkWeek
from sentinel.prices import ModelPrice, PriceTable
from sentinel.yamlfile import LocatedDoc, RuleError, RulesFileError, format_loc, load_located

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r}") from None
    return value


class BusinessHours(Frozen):
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = ("mon", "tue", "wed", "thu", "fri")
    start: str = "08:00"
    end: str = "19:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"expected HH:MM (24h), got {v!r}")
        return v

    @model_validator(mode="after")
    def _order(self) -> BusinessHours:
        if _minutes(self.start) >= _minutes(self.end):
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self

    def work_week(self) -> WorkWeek:
        return WorkWeek(frozenset(WEEKDAYS.index(d) for d in self.days), _minutes(self.start), _minutes(self.end))


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class TenantRules(Frozen):
    timezone: str | None = None
    cross_tenant_allowed: bool = False
    business_hours: BusinessHours | None = None
    name: str | None = None

    _tz = field_validator("timezone")(lambda cls, v: v if v is None else _check_tz(v))


class TenantsFile(Frozen):
    default_timezone: str = "UTC"
    business_hours: BusinessHours = BusinessHours()
    tenants: dict[str, TenantRules] = Field(default_factory=dict)

    _tz = field_validator("default_timezone")(lambda cls, v: _check_tz(v))


class Budget(Frozen):
    name: str = Field(min_length=1)
    scope: Literal["tenant", "api_key"]
    id: str = Field(min_length=1)
    period: Literal["day", "week", "month"]
    limit_usd: float | None = Field(None, gt=0)
    limit_tokens: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_limit(self) -> Budget:
        if (self.limit_usd is None) == (self.limit_tokens is None):
            raise ValueError("set exactly one of limit_usd or limit_tokens")
        return self


class BudgetsFile(Frozen):
    budgets: tuple[Budget, ...] = ()

    @field_validator("budgets")
    @classmethod
    def _unique(cls, v: tuple[Budget, ...]) -> tuple[Budget, ...]:
        seen: set[str] = set()
        for b in v:
            if b.name in seen:
                raise ValueError(f"duplicate budget name {b.name!r}")
            seen.add(b.name)
        return v


class Price(Frozen):
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)
    family: str | None = None

    def model_price(self, name: str) -> ModelPrice:
        return ModelPrice(
            name,
            self.family or name,
            self.input,
            self.output,
            self.input if self.cached_input is None else self.cached_input,
            self.input if self.cache_write is None else self.cache_write,
        )


class PricesFile(Frozen):
    source: str = ""
    currency: Literal["USD"] = "USD"
    fallback: Price = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    models: dict[str, Price] = Field(default_factory=dict)


class AlertPolicy(Frozen):
    """How findings become alerts: severity thresholds and timing."""

    score_critical: float = Field(0.9, ge=0, le=1)
    score_high: float = Field(0.75, ge=0, le=1)
    score_medium: float = Field(0.5, ge=0, le=1)
    score_low: float = Field(0.3, ge=0, le=1)
    usd_per_hour_critical: float = Field(500.0, ge=0)
    usd_per_hour_high: float = Field(50.0, ge=0)
    usd_per_hour_medium: float = Field(5.0, ge=0)
    resolve_after_s: float = Field(3600.0, gt=0, description="resolve a firing alert after this much quiet")
    stale_after_s: float = Field(
        172800.0, gt=0, description="safety net for detectors that resolve their own incidents"
    )
    update_every_s: float = Field(3600.0, gt=0, description="re-version a firing alert at most this often")
    score_step: float = Field(0.1, gt=0, le=1, description="a score rise this large makes a new version")


class Matcher(Frozen):
    detector: str | tuple[str, ...] | None = None
    min_severity: Literal["info", "low", "medium", "high", "critical"] | None = None
    tenant: str | tuple[str, ...] | None = None
    # Regular expressions (full match), for tenant or detector families; see sentinel/alerting/routes.py.
    detector_regex: str | None = None
    tenant_regex: str | None = None

    @field_validator("detector_regex", "tenant_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"invalid regular expression {v!r}: {err}") from None
        return v


class Route(Frozen):
    name: str
    match: Matcher = Matcher()
    sinks: tuple[str, ...]
    continue_: bool = Field(False, alias="continue")
    # The environment variable holding this route's PagerDuty routing key (the key itself never sits in YAML);
    # unset = the default key (SENTINEL_SINKS__PAGERDUTY_ROUTING_KEY). See sentinel/sinks/pagerduty.py.
    pagerduty_routing_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class RoutesFile(Frozen):
    routes: tuple[Route, ...] = ()
    # Sinks for an alert that no route matched (Alertmanager's root route).
    default_sinks: tuple[str, ...] = ("jsonl",)


@dataclass(frozen=True)
class DetectorRule:
    """One configured detector: its rule name, parameters and per-tenant overrides."""

    detector: str
    rule: str
    enabled: bool
    params: DetectorParams
    tenant_params: Mapping[str, DetectorParams] = field(default_factory=dict)
    file: str | None = None


@dataclass(frozen=True)
class RuleSet:
    """Everything in a rules directory, validated. Build detectors' context with :meth:`context`."""

    tenants: TenantsFile = TenantsFile()
    budgets: BudgetsFile = BudgetsFile()
    prices: PricesFile = PricesFile()
    alerting: AlertPolicy = AlertPolicy()
    routes: RoutesFile = RoutesFile()
    detectors: Mapping[str, DetectorRule] = field(default_factory=dict)
    source: str = "(built-in defaults)"
    digest: str = ""

    def context(self) -> DetectorContext:
        t = self.tenants
        default_week = t.business_hours.work_week()
        calendar = TenantCalendar(
            {
                tid: (
                    tr.timezone or t.default_timezone,
                    tr.business_hours.work_week() if tr.business_hours else default_week,
                )
                for tid, tr in t.tenants.items()
            },
            default=(t.default_timezone, default_week),
        )
        prices = PriceTable(
            {name: p.model_price(name) for name, p in self.prices.models.items()},
            self.prices.fallback.model_price("fallback"),
        )
        tenants = {tid: TenantInfo(cross_tenant_allowed=tr.cross_tenant_allowed) for tid, tr in t.tenants.items()}
        budgets = tuple(
            BudgetInfo(b.name, b.scope, b.id, b.period, b.limit_usd, b.limit_tokens) for b in self.budgets.budgets
        )
        return DetectorContext(calendar=calendar, prices=prices, tenants=tenants, budgets=budgets)

    def enabled_detectors(self) -> list[DetectorRule]:
        return [d for d in self.detectors.values() if d.enabled]


_RESERVED = ("enabled", "rule", "tenants")


def _pydantic_errors(doc: LocatedDoc, err: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[RuleError]:
    out = []
    for e in err.errors():
        loc = (*prefix, *e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r})"
        out.append(RuleError(doc.file, doc.line_of(loc), format_loc(loc), msg))
    return out


def _load_model(path: Path, model: type[Frozen], errors: list[RuleError]) -> Any:
    if not path.exists():
        return model()
    try:
        doc = load_located(path)
    except RulesFileError as err:
        errors.extend(err.errors)
        return model()
    if not isinstance(doc.data, dict):
        errors.append(RuleError(doc.file, doc.line_of(()), "", "expected a mapping at the top level"))
        return model()
    try:
        return model.model_validate(doc.data)
    except ValidationError as err:
        errors.extend(_pydantic_errors(doc, err))
        return model()


def _load_detector(path: Path, name: str, errors: list[RuleError]) -> DetectorRule | None:
    try:
        cls = registry.get(name)
    except KeyError as err:
        errors.append(RuleError(str(path), None, "", str(err.args[0])))
        return None
    if not path.exists():
        return DetectorRule(name, name, True, cls.Params())
    try:
        doc = load_located(path)
    except RulesFileError as err:
        errors.extend(err.errors)
        return None
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        errors.append(RuleError(doc.file, doc.line_of(()), "", "expected a mapping at the top level"))
        return None
    ok = True
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        errors.append(doc.error(("enabled",), f"expected true or false (got {enabled!r})"))
        ok = False
    rule = data.get("rule", name)
    if not isinstance(rule, str) or not rule:
        errors.append(doc.error(("rule",), f"expected a non-empty string (got {rule!r})"))
        ok = False
    base = {k: v for k, v in data.items() if k not in _RESERVED}
    params: DetectorParams | None = None
    try:
        params = cls.Params.model_validate(base)
    except ValidationError as err:
        errors.extend(_pydantic_errors(doc, err))
        ok = False
    overrides: dict[str, DetectorParams] = {}
    tenants = data.get("tenants") or {}
    if not isinstance(tenants, dict):
        errors.append(doc.error(("tenants",), "expected a mapping of tenant id to parameter overrides"))
        ok = False
    else:
        for tid, over in tenants.items():
            if not isinstance(over, dict):
                errors.append(doc.error(("tenants", tid), "expected a mapping of parameter overrides"))
                ok = False
                continue
            try:
                overrides[tid] = cls.Params.model_validate({**base, **over})
            except ValidationError as err:
                errors.extend(_pydantic_errors(doc, err, ("tenants", tid)))
                ok = False
    if not ok or params is None:
        return None
    return DetectorRule(name, str(rule), bool(enabled), params, overrides, doc.file)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    if root.is_dir():
        for p in sorted(root.rglob("*.yaml")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def load_rules(directory: str | Path | None) -> RuleSet:
    """Load and validate a rules directory (``None`` = built-in defaults only)."""
    errors: list[RuleError] = []
    if directory is None:
        defaults = {n: DetectorRule(n, n, True, cls.Params()) for n, cls in registry.registered().items()}
        return RuleSet(detectors=defaults)
    root = Path(directory)
    if not root.is_dir():
        raise RulesFileError([RuleError(str(root), None, "", "rules directory does not exist")])
    tenants = _load_model(root / "tenants.yaml", TenantsFile, errors)
    budgets = _load_model(root / "budgets.yaml", BudgetsFile, errors)
    prices = _load_model(root / "prices.yaml", PricesFile, errors)
    alerting = _load_model(root / "alerting.yaml", AlertPolicy, errors)
    routes = _load_model(root / "routes.yaml", RoutesFile, errors)
    det_dir = root / "detectors"
    known = registry.registered()
    if det_dir.is_dir():
        for p in sorted(det_dir.glob("*.y*ml")):
            if p.stem not in known:
                errors.append(RuleError(str(p), None, "", f"no detector named {p.stem!r}; known: {', '.join(known)}"))
    detectors: dict[str, DetectorRule] = {}
    for name in known:
        rule = _load_detector(det_dir / f"{name}.yaml", name, errors)
        if rule is not None:
            detectors[name] = rule
    if errors:
        raise RulesFileError(errors)
    return RuleSet(tenants, budgets, prices, alerting, routes, detectors, str(root), _digest(root))

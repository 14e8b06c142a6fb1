"""runaway_loop: an agent session that keeps calling the model with nobody watching.

Method. Turns are grouped per session (``session_id``; without one, per
``api_key_id`` + ``prompt_shape``) into *runs*: a gap longer than ``quiet_s``
ends a run. Each run keeps O(1) statistics, folded in as turns arrive:

* **periodicity** -- the coefficient of variation of the gaps between turns,
  from an exponentially weighted mean and variance of the gaps (West 1979,
  see :mod:`detectors.stats`). An agent that waits for its own previous call
  produces gaps of "model latency + tool time", CV around 0.05-0.3; people
  reading and typing produce heavy-tailed think times, CV near 1 or above.
  Low inter-arrival dispersion is the classic mark of automated traffic
  (Hu et al., "BAYWATCH: robust beaconing detection to identify infected
  hosts in large-scale enterprise networks", DSN 2016; RITA's beacon score).
* **steadiness** -- time since the last human-paced gap: a gap more than
  ``irregular_ratio`` times longer, or shorter, than the mean gap so far.
* **repetition** -- share of turns whose ``prompt_shape`` equals the previous turn's.
* **context growth** -- share of turns whose ``input_tokens`` grew.
* **off-hours** -- the turn falls outside the tenant's business hours
  (nights and weekends, tenant time zone).
* **cost at risk** -- spent so far plus the current burn rate (recent cost
  per turn x turns per hour) until the tenant's next business-hours start,
  log-scaled against ``cost_full_usd``.

The score is the weighted sum of these signals, the non-periodic ones scaled
by the periodicity signal: one template, growing context and a late hour are
what a person chatting at night shows too, so they only count in proportion
to machine pacing (weights are parameters; each signal's contribution is
reported and they sum to the score). A run is only judged once it is warm
(``min_turns``), has been machine-paced for ``min_steady_s``, its gap CV is
at most ``max_cv`` and ``min_at_risk_usd`` dollars are at stake; a run
without a session must also show context growth, since a sequential batch
worker on one key and template is otherwise indistinguishable from a loop.

Scheduled agents: every finished run of an agent (tenant + prompt shape)
folds its cost into a small per-agent baseline. Once ``min_runs`` runs are
known and their cost is consistent (CV <= ``max_run_cost_cv``), a run that
has cost at most ``run_cost_factor`` x the typical run is a scheduled run,
not a runaway; it fires once it goes past that, and such a run is kept out
of the baseline. An agent's first ``min_runs`` long runs are judged like any
other session: there is no history yet to call them routine.

An incident opens with one finding, emits again when the score rises by
``score_step`` or the spent cost grows ``cost_step``-fold, and resolves when
the session has been quiet for ``quiet_s``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from detectors.keyspace import MOVE_EVERY, KeyspaceStats, evict_oldest, expire_idle, touch
from detectors.records import new_object, record_decoder, record_encoder
from detectors.registry import register
from detectors.stats import Ewm, alpha_for_half_life, ewm_update
from sentinel.events import UsageEvent

_ATTACK = {"framework": "OWASP Top 10 for LLM Applications 2025", "id": "LLM10", "name": "Unbounded Consumption"}
# Weight of the newest finished run in an agent's typical run cost.
_RUN_ALPHA = 0.3
# Weight of the newest turn in the recent cost per turn (half-life ~ 3 turns).
_TURN_COST_ALPHA = 0.2
_intern = sys.intern
# Turn from which a run keeps statistics (gaps, repetition, growth); before it, turns are only counted.
_FIRST = 3


class RunawayLoopParams(DetectorParams):
    min_turns: int = Field(15, ge=_FIRST + 3, description="turns a run needs before it is judged (warm-up)")
    min_steady_s: float = Field(600.0, gt=0, description="machine-paced time (no human-paced gap) before a run fires")
    steady_full_s: float = Field(1800.0, gt=0, description="machine-paced time that gives the full steadiness signal")
    quiet_s: float = Field(900.0, gt=0, description="a gap this long ends a run; a firing run resolves after it")
    max_cv: float = Field(0.45, gt=0, description="gap coefficient of variation above which a run is not periodic")
    full_cv: float = Field(0.2, ge=0, description="gap coefficient of variation at or below which periodicity is full")
    irregular_ratio: float = Field(2.5, gt=1, description="a gap this many times longer/shorter than the mean is human")
    gap_half_life_turns: float = Field(10.0, gt=0, description="half-life, in turns, of the gap mean and variance")
    min_growth_fallback: float = Field(
        0.5, ge=0, le=1, description="growth signal a run without session_id needs (batch workers don't grow context)"
    )
    min_at_risk_usd: float = Field(1.0, ge=0, description="spent + projected dollars below which a run is not reported")
    cost_full_usd: float = Field(1000.0, gt=0, description="dollars at risk that give the full cost signal (log scale)")
    fire_score: float = Field(0.6, ge=0, le=1, description="score at which an incident opens")
    score_step: float = Field(0.1, gt=0, le=1, description="score rise that re-emits a firing incident")
    cost_step: float = Field(2.0, gt=1, description="spent-cost growth factor that re-emits a firing incident")
    weight_periodic: float = Field(0.25, ge=0, le=1, description="weight of the periodicity signal")
    weight_steady: float = Field(0.2, ge=0, le=1, description="weight of the steadiness signal")
    weight_repeat: float = Field(0.1, ge=0, le=1, description="weight of the prompt-shape repetition signal")
    weight_growth: float = Field(0.1, ge=0, le=1, description="weight of the context-growth signal")
    weight_off_hours: float = Field(0.15, ge=0, le=1, description="weight of the off-hours signal")
    weight_cost: float = Field(0.2, ge=0, le=1, description="weight of the cost-at-risk signal")
    min_runs: int = Field(3, ge=1, description="finished runs of an agent before its typical run cost is trusted")
    run_cost_factor: float = Field(3.0, ge=1, description="a run costing up to this x the typical run is scheduled")
    max_run_cost_cv: float = Field(0.5, ge=0, description="run-cost CV up to which an agent's runs count as consistent")


class RunRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`Run` is stored in a snapshot: its fields, in this order, as one array."""

    moved: float
    tenant: str = ""
    start: float = 0.0
    last: float = 0.0
    n: int = 0
    rep: int = 0
    up: int = 0
    shape: str | None = None
    first_in: int = 0
    last_in: int = 0
    gap_mean: float = 0.0
    gap_var: float = 0.0
    cost: float = 0.0
    turn_cost: float = 0.0




class Run:
    """One run of one session. Times are event-time epoch seconds.

    ``start`` is where the current machine-paced stretch began: the run's first turn, or the
    last human-paced gap. ``rep``/``up`` count turns (from turn ``_FIRST`` on) with the same
    prompt shape as / more input tokens than the previous one; ``turn_cost`` is the recent cost per turn.

    A plain ``__slots__`` class rather than a msgspec Struct: a turn writes up to ten of these
    fields, and CPython only specializes attribute stores for types with the default
    ``__setattr__``, which a Struct overrides (a Struct store costs ~25 ns more). Snapshots
    encode it as a :class:`RunRecord` (same fields, same order, so the same bytes). Made by
    :func:`_first_turn` (a new run) or :func:`detectors.records.from_record` (a restored one).
    """

    __slots__ = ("cost", "first_in", "gap_mean", "gap_var", "last", "last_in", "moved", "n", "rep", "shape",
                 "start", "tenant", "turn_cost", "up")
    moved: float
    tenant: str
    start: float
    last: float
    n: int
    rep: int
    up: int
    shape: str | None
    first_in: int
    last_in: int
    gap_mean: float
    gap_var: float
    cost: float
    turn_cost: float



def _first_turn(t: float, tenant: str, inp: int, cost: float) -> Run:
    """A run opened by its first turn (a plain function: instantiating a class with an ``__init__``
    costs about twice as much in CPython 3.11, and 1 in 5 events opens a run)."""
    st: Run = new_object(Run)
    st.moved = t
    st.tenant = tenant
    _begin(st, t, inp, cost)
    return st


def _begin(st: Run, t: float, inp: int, cost: float) -> None:
    """Set every per-run field of ``st`` to a run whose only turn is this one (a new run, or the
    next run of a session after a quiet spell); ``moved`` and ``tenant`` belong to the session."""
    st.start = st.last = t
    st.n = 1
    st.rep = st.up = 0
    st.shape = None
    st.first_in = st.last_in = inp
    st.gap_mean = st.gap_var = 0.0
    st.cost = st.turn_cost = cost


class AgentRuns(msgspec.Struct, array_like=True, gc=False):
    """Finished runs of one agent (tenant + prompt shape): typical cost and turns."""

    moved: float
    cost: Ewm = msgspec.field(default_factory=Ewm)
    turns: float = 0.0


class Incident(msgspec.Struct, array_like=True, gc=False):
    """A firing run: what was last reported about it."""

    entity_id: str
    tenant: str
    api_key_id: str
    session_id: str | None
    first_seen: float
    score: float
    cost: float
    turns: int
    last: float


class RunawayLoopState(msgspec.Struct):
    # Runs are plain objects (see Run): the detector snapshots and restores with hooks for them.
    runs: dict[str, Run] = msgspec.field(default_factory=dict)
    agents: dict[str, AgentRuns] = msgspec.field(default_factory=dict)
    incidents: dict[str, Incident] = msgspec.field(default_factory=dict)
    runs_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    agents_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


_encoder = record_encoder((Run, RunRecord))
_decoder = record_decoder(RunawayLoopState, (Run, RunRecord))


def _new_agent(t: float) -> AgentRuns:
    return AgentRuns(moved=t)


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


# The parameters the per-turn path reads, derived once per parameter set:
# (quiet_s, irregular_ratio, gap alpha, 1 - gap alpha, min_turns, min_steady_s, run cap).
# A plain tuple: one unpack costs less than seven attribute reads of a pydantic model.
_Hot = tuple[float, float, float, float, int, float, int]


def _hot(p: RunawayLoopParams) -> _Hot:
    alpha = alpha_for_half_life(p.gap_half_life_turns)
    return (p.quiet_s, p.irregular_ratio, alpha, 1.0 - alpha, p.min_turns, p.min_steady_s,
            p.max_keys - p.max_keys // 8)


@register
class RunawayLoop(Detector[RunawayLoopParams, RunawayLoopState]):
    """An unattended agent session repeating one prompt shape at a steady period, usually off-hours.

    Keyed per session (fallback: api key + prompt shape). Fires with the cost
    so far and the cost projected until the tenant's next business-hours
    start, re-emits as the cost doubles, resolves after ``quiet_s`` of quiet.
    """

    name: ClassVar[str] = "runaway_loop"
    Params: ClassVar[type[DetectorParams]] = RunawayLoopParams
    State: ClassVar[type[msgspec.Struct]] = RunawayLoopState
    description: ClassVar[str] = "unattended agent loops with projected cost until business hours"

    # -- hot path ---------------------------------------------------------------------------------

    def __init__(self, params: RunawayLoopParams, context: DetectorContext,
                 tenant_params: Mapping[str, RunawayLoopParams] | None = None) -> None:
        super().__init__(params, context, tenant_params)
        # The parameters the per-turn path reads, derived once per parameter set (see _Hot).
        self._hot = _hot(params)
        self._tenant_hot = {tenant: _hot(tp) for tenant, tp in self.tenant_params.items()}
        # tick() finds ended runs with the shortest quiet_s and judged ones with the fewest min_turns.
        self._tick_quiet = min([params.quiet_s, *(tp.quiet_s for tp in self.tenant_params.values())])
        self._tick_min_turns = min([params.min_turns, *(tp.min_turns for tp in self.tenant_params.values())])

    def update(self, event: UsageEvent) -> list[Finding] | None:
        sid = event.session_id
        if sid is None:
            shape = event.prompt_shape
            if shape is None:
                return None  # no identity to follow a loop by
            key = f"\x1f{event.api_key_id}\x1f{shape}"
        else:
            key = sid
        tenant = event.tenant_id
        runs = self.state.runs
        st = runs.get(key)
        if st is not None and st.tenant != tenant:
            # Same session id in another tenant: keep them apart.
            key = tenant + "\x1e" + key
            st = runs.get(key)
        t: float = event.ts  # type: ignore[assignment]
        cost = event.cost_usd
        if cost is None:
            cost = self.context.prices.resolve(event.model).cost(
                event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cache_write_tokens
            )
        inp = event.input_tokens
        hot = self._tenant_hot.get(tenant, self._hot) if self._tenant_hot else self._hot
        if st is None:
            runs[key] = _first_turn(t, _intern(tenant), inp, cost)
            if len(runs) > hot[6]:
                evict_oldest(runs, len(runs) - hot[6], self.state.runs_stats)
            return None
        if t - st.moved > MOVE_EVERY:
            del runs[key]
            runs[key] = st
            st.moved = t
        gap = t - st.last
        if gap > hot[0]:
            return self._restart(key, st, t, inp, cost)
        n = st.n
        if n < _FIRST:
            # Most sessions end within a few turns: until then only count. Statistics start at turn _FIRST.
            if gap >= 0.0:
                st.last = t
            st.n = n = n + 1
            st.cost += cost
            st.turn_cost = cost
            st.last_in = inp
            if n == _FIRST:
                shape = event.prompt_shape
                st.shape = None if shape is None else _intern(shape)
                st.first_in = inp
            return None
        _quiet, ratio, alpha, keep, min_turns, min_steady_s, _cap = hot
        if gap >= 0.0:
            st.last = t
            if n > _FIRST:
                mean = st.gap_mean
                if gap > mean * ratio or gap * ratio < mean:
                    st.start = t  # a human-paced gap: the machine-paced stretch starts again
                diff = gap - mean
                incr = alpha * diff
                st.gap_mean = mean + incr
                st.gap_var = keep * (st.gap_var + diff * incr)
            else:
                st.gap_mean = gap
        # A late turn (gap < 0) still counts, but says nothing about the period.
        st.n = n = n + 1
        shape = event.prompt_shape
        if shape is not None and shape == st.shape:
            st.rep += 1
        else:
            st.shape = None if shape is None else _intern(shape)
        if inp > st.last_in:
            st.up += 1
        st.last_in = inp
        st.cost += cost
        st.turn_cost += _TURN_COST_ALPHA * (cost - st.turn_cost)
        if n < min_turns or t - st.start < min_steady_s:
            return None
        mean = st.gap_mean
        p = self.params_for(tenant) if self._tenant_hot else self.params
        if mean <= 0.0 or st.gap_var > (p.max_cv * mean) ** 2:
            return None
        found = self._judge(key, st, event, t, p, sid is None)
        return None if found is None else [found]

    def _restart(self, key: str, st: Run, t: float, inp: int, cost: float) -> list[Finding] | None:
        """The session was quiet for ``quiet_s``: its run ended, this turn starts the next one."""
        done = self._end_run(key, st, st.last + self.params_for(st.tenant).quiet_s)
        _begin(st, t, inp, cost)
        return None if done is None else [done]

    # -- judging ----------------------------------------------------------------------------------

    def _judge(self, key: str, st: Run, event: UsageEvent, t: float, p: RunawayLoopParams,
               fallback: bool) -> Finding | None:
        turns = st.n - _FIRST  # turns compared with their predecessor
        up_share = st.up / turns
        if fallback and _clamp((up_share - 0.5) / 0.4) < p.min_growth_fallback:
            return None
        tenant = st.tenant
        spent = st.cost
        agent = self.state.agents.get(tenant + "\x1f" + st.shape) if st.shape is not None else None
        typical = None
        if agent is not None and agent.cost.n >= p.min_runs and agent.cost.mean > 0.0:
            typical = agent.cost.mean
            consistent = math.sqrt(agent.cost.var) <= p.max_run_cost_cv * typical
            if consistent and spent <= p.run_cost_factor * typical:
                return None  # a scheduled run within its usual cost
        incidents = self.state.incidents
        inc = incidents.get(key)
        # A firing run on most turns: when its spend neither fails the at-risk gate (the at-risk dollars
        # are at least the spent ones) nor has grown cost_step-fold, the turn only reports if the score
        # rises by score_step. The score is at most 1; below that, the off-hours and cost signals add at
        # most their weights. When even that cannot reach the step, the turn is only counted: the
        # calendar and the evidence are for turns that report.
        counted = inc is not None and p.min_at_risk_usd <= spent < inc.cost * p.cost_step
        if counted and inc is not None and inc.score + p.score_step > 1.0:
            inc.turns = st.n
            inc.last = t
            return None
        growth = _clamp((up_share - 0.5) / 0.4)
        cv = math.sqrt(st.gap_var) / st.gap_mean
        steady_s = t - st.start
        periodic = _clamp((p.max_cv - cv) / max(p.max_cv - p.full_cv, 1e-9))
        # The other signals are what a late human chat shows too (one template, growing context, night):
        # they count in proportion to the machine pacing.
        steady = periodic * p.weight_steady * _clamp(steady_s / p.steady_full_s)
        repeat = periodic * p.weight_repeat * (st.rep / turns)
        growing = periodic * p.weight_growth * growth
        if counted and inc is not None:
            best = p.weight_periodic * periodic + steady + repeat + growing + periodic * (
                p.weight_off_hours + p.weight_cost)
            if best + 1e-9 < inc.score + p.score_step:  # the margin covers rounding of the real sum
                inc.turns = st.n
                inc.last = t
                return None
        cal = self.context.calendar
        burn = st.turn_cost * 3600.0 / st.gap_mean
        # The next business-hours start is t itself inside business hours (one calendar lookup for both).
        resume = cal.next_business_start(tenant, t)
        off_hours = resume != t
        hours_left = (resume - t) / 3600.0
        projected = burn * hours_left
        at_risk = spent + projected
        if at_risk < p.min_at_risk_usd:
            return None
        signals = {
            "periodic": p.weight_periodic * periodic,
            "steady": steady,
            "repeat": repeat,
            "growth": growing,
            "off_hours": periodic * p.weight_off_hours if off_hours else 0.0,
            "cost": periodic * p.weight_cost * _clamp(math.log1p(at_risk) / math.log1p(p.cost_full_usd)),
        }
        score = score_now = _clamp(sum(signals.values()))
        if inc is None:
            if score < p.fire_score or len(incidents) >= p.max_keys:
                return None
            inc = Incident(
                entity_id=event.session_id or f"{event.api_key_id}/{st.shape}",
                tenant=tenant,
                api_key_id=event.api_key_id,
                session_id=event.session_id,
                first_seen=st.start,
                score=score,
                cost=st.cost,
                turns=st.n,
                last=t,
            )
            incidents[key] = inc
            title = "Runaway agent loop"
        elif score >= inc.score + p.score_step or st.cost >= inc.cost * p.cost_step:
            # An incident's score only goes up while it fires: a dip of one signal (a slow turn) is no
            # de-escalation. The score of this turn stays in the evidence.
            score_now = score
            score = inc.score = max(score, inc.score)
            inc.cost = st.cost
            inc.turns = st.n
            inc.last = t
            title = "Runaway agent loop (escalated)"
        else:
            inc.turns = st.n
            inc.last = t
            return None
        evidence: dict[str, Any] = {
            "turns": st.n,
            "period_s": round(st.gap_mean, 3),
            "gap_cv": round(cv, 4),
            "steady_minutes": round(steady_s / 60.0, 1),
            "repeat_share": round(st.rep / turns, 4),
            "growth_share": round(st.up / turns, 4),
            "tokens_per_turn_first": st.first_in,
            "tokens_per_turn_last": st.last_in,
            "tokens_per_turn_slope": round((st.last_in - st.first_in) / turns, 2),
            "cost_so_far_usd": round(st.cost, 6),
            "burn_usd_per_hour": round(burn, 6),
            "projected_cost_usd": round(projected, 4),
            "at_risk_usd": round(at_risk, 4),
            "projected_until": cal.local_iso(tenant, resume),
            "hours_until_business": round(hours_left, 2),
            "local_time": cal.local_iso(tenant, t),
            "off_hours": off_hours,
            "prompt_shape": st.shape,
        }
        if score_now != score:
            evidence["score_now"] = round(score_now, 4)
        if typical is not None and agent is not None:
            evidence["typical_run_cost_usd"] = round(typical, 6)
            evidence["typical_run_turns"] = round(agent.turns, 1)
        summary = (
            f"{inc.entity_id}: {st.n} turns every ~{st.gap_mean:.0f}s for {steady_s / 60.0:.0f} min "
            f"(local {evidence['local_time']}); ${st.cost:.2f} spent, ${projected:.2f} more projected "
            f"until {evidence['projected_until']} at ${burn:.2f}/h."
        )
        return Finding(
            detector=self.name,
            entity_type="session",
            entity_id=inc.entity_id,
            tenant_id=tenant,
            ts=t,
            first_seen=inc.first_seen,
            score=score,
            title=title,
            evidence=evidence,
            risk_usd_per_hour=burn,
            summary=summary,
            signals=signals,
            api_key_id=inc.api_key_id,
            session_id=inc.session_id,
            sample_event_ids=[event.event_id],
            attack=_ATTACK,
            actions=["notify", "page"] if off_hours else ["notify"],
        )

    # -- end of runs --------------------------------------------------------------------------------

    def _end_run(self, key: str, st: Run, now: float) -> Finding | None:
        """Fold a finished run into its agent's baseline; resolve its incident if one is open."""
        p: RunawayLoopParams = self.params_for(st.tenant)
        shape = st.shape
        cap = p.max_keys // 8
        if shape is not None and cap > 0 and st.n >= p.min_turns:  # shorter runs are never judged
            agent = touch(self.state.agents, st.tenant + "\x1f" + shape, st.last, _new_agent, cap,
                          self.state.agents_stats)
            learned = agent.cost.n >= p.min_runs
            # Once an agent's runs are known, a run far past them is a runaway, not a new normal: keep it out.
            if not learned or st.cost <= p.run_cost_factor * agent.cost.mean:
                ewm_update(agent.cost, st.cost, _RUN_ALPHA)
                agent.turns = float(st.n) if agent.cost.n == 1 else agent.turns + _RUN_ALPHA * (st.n - agent.turns)
        inc = self.state.incidents.pop(key, None)
        if inc is None:
            return None
        inc.cost = st.cost
        inc.turns = st.n
        return self._resolved(inc, now, st.last)

    def _resolved(self, inc: Incident, now: float, last: float) -> Finding:
        return Finding(
            detector=self.name,
            entity_type="session",
            entity_id=inc.entity_id,
            tenant_id=inc.tenant,
            ts=now,
            first_seen=inc.first_seen,
            score=inc.score,
            title="Runaway agent loop stopped",
            evidence={
                "turns": inc.turns,
                "cost_so_far_usd": round(inc.cost, 6),
                "last_turn_local": self.context.calendar.local_iso(inc.tenant, last),
                "run_minutes": round((last - inc.first_seen) / 60.0, 1),
            },
            status="resolved",
            summary=f"{inc.entity_id}: quiet since {self.context.calendar.local_iso(inc.tenant, last)}; "
            f"{inc.turns} turns, ${inc.cost:.2f} in all.",
            api_key_id=inc.api_key_id,
            session_id=inc.session_id,
            attack=_ATTACK,
        )

    def tick(self, now: float) -> list[Finding] | None:
        state = self.state
        runs = state.runs
        per_tenant = self._tenant_hot
        limit = now - self._tick_quiet
        stop = limit + MOVE_EVERY
        victims: list[str] | None = None
        for key, st in runs.items():
            if st.moved > stop:
                break
            if st.last < limit:
                if per_tenant and st.last >= now - self.params_for(st.tenant).quiet_s:
                    continue
                if victims is None:
                    victims = [key]
                else:
                    victims.append(key)
        out: list[Finding] = []
        if victims is not None:
            min_turns = self._tick_min_turns
            for key in victims:
                st = runs.pop(key)
                if st.n >= min_turns:  # only runs that could be judged have an incident or a baseline to feed
                    found = self._end_run(key, st, st.last + self.params_for(st.tenant).quiet_s)
                    if found is not None:
                        out.append(found)
            state.runs_stats.expired += len(victims)
        incidents = state.incidents
        if incidents:
            lost = [k for k in incidents if k not in runs]  # evicted by the cap while firing
            for key in lost:
                inc = incidents.pop(key)
                out.append(self._resolved(inc, now, inc.last))
        agents = state.agents
        if agents:
            # expire_idle stops at the first agent moved after limit + MOVE_EVERY: usually the oldest one.
            ttl_limit = now - self.params.idle_ttl_s
            if next(iter(agents.values())).moved <= ttl_limit + MOVE_EVERY:
                expire_idle(agents, now, self.params.idle_ttl_s, state.agents_stats)
        return out or None

    # -- snapshots ----------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _encoder.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = _decoder.decode(data)

    # -- introspection ------------------------------------------------------------------------------

    def is_warm(self, key: str) -> bool:
        st = self.state.runs.get(key)
        return st is not None and st.n >= self.params.min_turns

    def tracked_keys(self) -> int:
        return len(self.state.runs) + len(self.state.agents)

    def evicted_keys(self) -> int:
        return self.state.runs_stats.evicted + self.state.agents_stats.evicted

#!/usr/bin/env python3
"""Deterministic generator of labelled LLM usage-event replay data for sentinel.

Usage (from the repository root)::

    python replay_data/generate.py [sample] [--out-dir replay_data] [--seed 7] [--data-dir ../shared/data]
    python replay_data/generate.py scenarios [--only spend_spike,...]
    python replay_data/generate.py all

``sample`` (the default) writes

* ``sample.jsonl.gz``     one week (Mon 2026-11-02T00:00Z .. Mon 2026-11-09T00:00Z) of usage events,
                          one JSON object per line, sorted by ``ts`` (``llm.usage.v1``),
* ``sample.labels.json``  the injected incidents and the hard negatives,
* ``sample.tenants.json`` the generated tenants, their keys, time zones and suggested budgets.

``scenarios`` writes ``scenarios/<detector>.jsonl.gz`` + ``<detector>.labels.json`` +
``<detector>.tenants.json`` for every detector (smaller 1-3 day streams).

Nothing here is random at run time: every random draw comes from a numpy ``Generator`` seeded
from ``--seed`` and a stable name (crc32), and gzip files are written with ``mtime=0``, so the
same seed and the same public traces give byte-identical files.

Where the numbers come from (see README.md for the full derivation):

* ServeGen (Alibaba, Apache-2.0, Xiang et al. 2025), ``servegen/language/m-mid``: one client per
  tenant.  The client's 10-minute request-rate series gives the tenant's diurnal and weekly rhythm
  (source time of day is mapped onto the tenant's local time of day), the per-window ``cv`` and
  Gamma/Weibull shape give the burstiness of the arrivals, and the client's 6-hourly token pdfs
  give the input/output sizes of its retrieval and summarisation calls.
* Azure LLM inference trace 2023 (CC-BY-4.0, Patel et al., ISCA 2024): token sizes of chat
  (``conv``) and coding (``code``) calls.
* Mooncake traces (Apache-2.0, Qin et al., FAST 2025): long-context agent step sizes, and the
  prompt-cache hit ratio: each (tenant, feature, model) replays a Mooncake trace's ``hash_ids``
  (512-token blocks) through its own LRU and applies the per-request hit fraction.

Only the standard library and numpy are used.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import csv
import gzip
import hashlib
import io
import json
import math
import os
import random
import sys
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_SEED = 7

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
WINDOW = 10 * MIN  # ServeGen window

SAMPLE_START = "2026-11-02T00:00:00Z"  # a Monday
SAMPLE_DAYS = 7
SAMPLE_BACKGROUND_REQUESTS = 152_000  # logical background requests of the week (before retries/incidents)

DETECTORS = (
    "spend_spike",
    "quota_burn",
    "runaway_loop",
    "cache_collapse",
    "cross_tenant",
    "retry_storm",
    "cancellation_tax",
)

# --------------------------------------------------------------------------------------------------
# Models, prices, latency
# --------------------------------------------------------------------------------------------------

GPT4O = "gpt-4o"
GPT4O_MINI = "gpt-4o-mini"
GPT41 = "gpt-4.1"
GPT41_MINI = "gpt-4.1-mini"
O3 = "o3"
SONNET = "claude-sonnet-4-20250514"
SONNET37 = "claude-3-7-sonnet-20250219"  # only before the model-version-change scenario
HAIKU = "claude-3-5-haiku-20241022"
OPUS = "claude-opus-4-20250514"
FLASH = "gemini-2.5-flash"
GPRO = "gemini-2.5-pro"

# model -> (provider, $/1M input, $/1M cached input, $/1M output); Anthropic cache write = 1.25 x input
PRICES: dict[str, tuple[str, float, float, float]] = {
    GPT4O: ("openai", 2.50, 1.25, 10.00),
    GPT4O_MINI: ("openai", 0.15, 0.075, 0.60),
    GPT41: ("openai", 2.00, 0.50, 8.00),
    GPT41_MINI: ("openai", 0.40, 0.10, 1.60),
    O3: ("openai", 2.00, 0.50, 8.00),
    SONNET: ("anthropic", 3.00, 0.30, 15.00),
    SONNET37: ("anthropic", 3.00, 0.30, 15.00),
    HAIKU: ("anthropic", 0.80, 0.08, 4.00),
    OPUS: ("anthropic", 15.00, 1.50, 75.00),
    FLASH: ("google", 0.30, 0.075, 2.50),
    GPRO: ("google", 1.25, 0.31, 10.00),
}

# smallest prompt the provider caches at all (OpenAI 1024; Anthropic 1024 / 2048 for Haiku; Gemini implicit)
MIN_CACHEABLE = {m: 1024 for m in PRICES} | {HAIKU: 2048, GPRO: 2048}

# model -> (time to first token base ms, prefill ms per 1k uncached prompt tokens, ms per output token)
LATENCY = {
    GPT4O: (350, 22, 11.0),
    GPT4O_MINI: (250, 10, 6.5),
    GPT41: (400, 22, 11.0),
    GPT41_MINI: (280, 10, 6.5),
    O3: (1400, 25, 14.0),
    SONNET: (650, 28, 17.0),
    SONNET37: (620, 28, 16.0),
    HAIKU: (420, 14, 8.5),
    OPUS: (1100, 45, 33.0),
    FLASH: (280, 7, 4.5),
    GPRO: (850, 22, 11.0),
}

MAX_OUTPUT = {GPT4O: 16384, GPT4O_MINI: 16384, GPT41: 32768, GPT41_MINI: 32768, O3: 100000,
              SONNET: 64000, SONNET37: 64000, HAIKU: 8192, OPUS: 32000, FLASH: 65536, GPRO: 65536}
MAX_CONTEXT = {GPT4O: 128000, GPT4O_MINI: 128000, GPT41: 1000000, GPT41_MINI: 1000000, O3: 200000,
               SONNET: 200000, SONNET37: 200000, HAIKU: 200000, OPUS: 200000, FLASH: 1000000, GPRO: 1000000}


def provider_of(model: str) -> str:
    if model in PRICES:
        return PRICES[model][0]
    if model.startswith(("claude", "anthropic.")):
        return "anthropic"
    if model.startswith("gemini"):
        return "google"
    return "openai"


def cost_usd(model: str, inp: int, cached: int, write: int, out: int) -> float:
    """cost = ((input - cached - cache_write)*in + cached*cached_in + cache_write*1.25*in + output*out)/1e6"""
    if model not in PRICES:
        return 0.0
    _, p_in, p_cached, p_out = PRICES[model]
    return ((inp - cached - write) * p_in + cached * p_cached + write * 1.25 * p_in + out * p_out) / 1e6


# --------------------------------------------------------------------------------------------------
# Time helpers
# --------------------------------------------------------------------------------------------------


def parse_ts(s: str) -> int:
    """RFC 3339 'Z' string -> epoch ms."""
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return round(dt.timestamp() * 1000)


_DAY_PREFIX: dict[int, str] = {}


def fmt_ts(ms: int) -> str:
    """epoch ms -> 'YYYY-MM-DDTHH:MM:SS.mmmZ'."""
    day, rem = divmod(int(ms), 86_400_000)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        t = time.gmtime(day * 86400)
        prefix = _DAY_PREFIX[day] = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
    h, rem = divmod(rem, 3_600_000)
    m, rem = divmod(rem, 60_000)
    sec, milli = divmod(rem, 1000)
    return f"{prefix}{h:02d}:{m:02d}:{sec:02d}.{milli:03d}Z"


def local_to_utc(tz: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    """local wall time in zone tz -> epoch ms."""
    dt = datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz))
    return int(dt.timestamp() * 1000)


def local_dt(tz: str, ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(tz))


def stable_hash(*parts: object, n: int = 8) -> str:
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=16).hexdigest()
    return h[:n]


M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """Cheap 64-bit integer mixer (deterministic, random-looking ids from counters)."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def cum_weights(w: Iterable[float]) -> list[float]:
    out, acc = [], 0.0
    for x in w:
        acc += float(x)
        out.append(acc)
    return out


class Rng:
    """Seeded scalar random source.

    Uniforms come from Mersenne Twister ``random.Random(seed).random()``, whose sequence Python
    guarantees to keep across versions; every other distribution is derived here from those
    uniforms (Box-Muller, Marsaglia-Tsang, inverse CDFs), so the output never depends on library
    implementation details.  Scalar draws this way are several times faster than numpy's.
    """

    __slots__ = ("_r",)

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed).random

    def random(self) -> float:
        return self._r()

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self._r()

    def integers(self, lo: int, hi: int | None = None) -> int:
        if hi is None:
            lo, hi = 0, lo
        return lo + min(int(self._r() * (hi - lo)), hi - lo - 1)

    def normal(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        u1 = 1.0 - self._r()
        u2 = self._r()
        return mu + sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def lognormal(self, mu: float, sigma: float) -> float:
        return math.exp(self.normal(mu, sigma))

    def gamma(self, a: float) -> float:
        """Gamma(shape a, scale 1), Marsaglia & Tsang (2000)."""
        if a < 1.0:
            return self.gamma(a + 1.0) * (1.0 - self._r()) ** (1.0 / a)
        d = a - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            x = self.normal()
            v = (1.0 + c * x) ** 3
            if v <= 0:
                continue
            u = 1.0 - self._r()
            if u < 1.0 - 0.0331 * x ** 4 or math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)):
                return d * v

    def weibull(self, c: float) -> float:
        return (-math.log(1.0 - self._r())) ** (1.0 / c)

    def geometric(self, p: float) -> int:
        """Trials until the first success (support 1, 2, ...)."""
        return 1 + int(math.log(1.0 - self._r()) / math.log(1.0 - p))

    def pick(self, items: list[Any] | tuple[Any, ...], weights: list[float] | tuple[float, ...]) -> Any:
        return items[wchoice(self, cum_weights(weights))]


def wchoice(rng: Rng, cum: list[float]) -> int:
    """Index drawn with probabilities proportional to the weights behind cumulative list cum."""
    return min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)


def clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


# --------------------------------------------------------------------------------------------------
# Public traces
# --------------------------------------------------------------------------------------------------


class Pdf:
    """A discrete distribution {value: probability} sampled by inverse CDF."""

    def __init__(self, table: dict[int, float]) -> None:
        items = sorted(table.items())
        self.values = [int(k) for k, _ in items]
        self.cdf = cum_weights(v for _, v in items)

    def sample(self, rng: Rng) -> int:
        return self.values[wchoice(rng, self.cdf)]


@dataclass
class ClientTrace:
    """ServeGen per-client 10-minute windows (2016 = 14 days), gap-filled."""

    rate: np.ndarray  # requests/s
    cv: np.ndarray
    weibull: np.ndarray  # bool: pattern == Weibull
    shape: np.ndarray


class PublicData:
    """Loads (lazily, once) the public traces this generator derives its statistics from."""

    N_CLIENTS = 109
    N_WIN = 2016

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        if not (self.dir / "servegen").is_dir():
            raise FileNotFoundError(f"public traces not found under {self.dir} (use --data-dir)")
        self._azure: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._mooncake: dict[str, list[tuple[int, int, tuple[int, ...]]]] = {}
        self._raw_traces: dict[int, list[list[str]]] = {}
        self._traces: dict[int, ClientTrace] = {}
        self._datasets: dict[int, dict[str, Any] | None] = {}
        self._pdfs: dict[tuple[int, str, str], Pdf | None] = {}
        self._gap: np.ndarray | None = None
        self._has: dict[int, bool] = {}
        self._pdf_by_window: dict[tuple[int, int, str], Pdf | None] = {}
        self._fractions: dict[str, list[float]] = {}

    # Azure ------------------------------------------------------------------------------------
    def azure(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """kind 'code' | 'conv' -> (ContextTokens, GeneratedTokens)."""
        if kind not in self._azure:
            p = self.dir / "azure_llm_inference_2023" / f"AzureLLMInferenceTrace_{kind}.csv"
            ctx, gen = [], []
            with open(p, newline="") as f:
                r = csv.reader(f)
                next(r)
                for row in r:
                    ctx.append(int(row[1]))
                    gen.append(int(row[2]))
            self._azure[kind] = (np.array(ctx, dtype=np.int64), np.array(gen, dtype=np.int64))
        return self._azure[kind]

    # Mooncake ---------------------------------------------------------------------------------
    def mooncake(self, kind: str) -> list[tuple[int, int, tuple[int, ...]]]:
        """kind 'conversation' | 'synthetic' -> [(input_length, output_length, hash_ids)]."""
        if kind not in self._mooncake:
            rows = []
            with gzip.open(self.dir / "mooncake" / f"{kind}_trace.jsonl.gz", "rt") as f:
                for line in f:
                    o = json.loads(line)
                    rows.append((int(o["input_length"]), int(o["output_length"]), tuple(o["hash_ids"])))
            self._mooncake[kind] = rows
        return self._mooncake[kind]

    def hit_fractions(self, kind: str) -> list[float]:
        if kind not in self._fractions:
            self._fractions[kind] = lru_hit_fractions(self.mooncake(kind))
        return self._fractions[kind]

    # ServeGen ---------------------------------------------------------------------------------
    def _raw(self, cid: int) -> list[list[str]]:
        if cid not in self._raw_traces:
            p = self.dir / "servegen" / "language" / "m-mid" / f"chunk-{cid}-trace.csv.gz"
            with gzip.open(p, "rt", newline="") as f:
                self._raw_traces[cid] = [row for row in csv.reader(f) if row]
        return self._raw_traces[cid]

    def gap_windows(self) -> np.ndarray:
        """Windows that are zero for every client: collection gaps, treated as missing data."""
        if self._gap is None:
            tot = np.zeros(self.N_WIN)
            for cid in range(self.N_CLIENTS):
                tot += np.array([float(r[1]) for r in self._raw(cid)])
            self._gap = tot == 0
        return self._gap

    def client(self, cid: int) -> ClientTrace:
        if cid not in self._traces:
            raw = self._raw(cid)
            rate = np.array([float(r[1]) for r in raw])
            cv = np.array([float(r[2] or 0) for r in raw])
            weib = np.array([r[3] == "Weibull" for r in raw])
            shape = np.array([float(r[4] or 0) for r in raw])
            gap = self.gap_windows()
            for i in np.flatnonzero(gap):
                # same time of day one week later/earlier first (keeps the weekday), then +-1, +-2 days
                for d in (1008, -1008, -144, 144, -288, 288):
                    j = i + d
                    if 0 <= j < self.N_WIN and not gap[j]:
                        rate[i], cv[i], weib[i], shape[i] = rate[j], cv[j], weib[j], shape[j]
                        break
            self._traces[cid] = ClientTrace(rate, cv, weib, shape)
        return self._traces[cid]

    def has_dataset(self, cid: int) -> bool:
        if cid not in self._has:
            self._has[cid] = (self.dir / "servegen" / "language" / "m-mid" / f"chunk-{cid}-dataset.json.gz").exists()
        return self._has[cid]

    def token_pdf(self, cid: int, src_sec: int, which: str) -> Pdf | None:
        """Client's input/output token pdf for the 6-hour window containing src_sec (nearest non-empty)."""
        if cid not in self._datasets:
            p = self.dir / "servegen" / "language" / "m-mid" / f"chunk-{cid}-dataset.json.gz"
            if p.exists():
                with gzip.open(p, "rt") as f:
                    self._datasets[cid] = json.load(f)
            else:
                self._datasets[cid] = None
        ds = self._datasets[cid]
        if ds is None:
            return None
        w = (int(src_sec) // 21600) % 56
        hit = self._pdf_by_window.get((cid, w, which), False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        self._pdf_by_window[(cid, w, which)] = self._token_pdf(ds, cid, w, which)
        return self._pdf_by_window[(cid, w, which)]

    def _token_pdf(self, ds: dict[str, Any], cid: int, w: int, which: str) -> Pdf | None:
        for dw in (0, -1, 1, -2, 2, -4, 4, -28, 28, -8, 8, -12, 12, -20, 20):
            k = str(((w + dw) % 56) * 21600)
            key = (cid, k, which)
            if key not in self._pdfs:
                s = ds.get(k, {}).get(which, "{}")
                table = ast.literal_eval(s) if s and s != "{}" else {}
                self._pdfs[key] = Pdf(table) if table else None
            if self._pdfs[key] is not None:
                return self._pdfs[key]
        return None


# --------------------------------------------------------------------------------------------------
# Prompt cache: Mooncake hash_ids through an LRU
# --------------------------------------------------------------------------------------------------


class CacheCursor:
    """Walks one Mooncake trace's prefix-cache hit fractions from a per-(tenant, feature, model) offset.

    The fractions come from PublicData.hit_fractions(): the trace's hash_ids (512-token blocks)
    replayed in order through an LRU of LRU_CAPACITY blocks, cyclically, with the LRU warmed by
    the tail of the trace, so that every position has a warm-cache value.  Each request of the
    stream takes the value STRIDE positions further on (so every stream sees the trace's overall
    hit-ratio level rather than one stretch of it); the per-request fraction is applied to the
    event's own input tokens.
    """

    STRIDE = 97  # prime, coprime with both trace lengths: every stream samples the whole trace evenly

    def __init__(self, fractions: list[float], start: int) -> None:
        self.fractions = fractions
        self.pos = start

    def next_fraction(self) -> float:
        f = self.fractions[self.pos % len(self.fractions)]
        self.pos += self.STRIDE
        return f


LRU_CAPACITY = 24_576  # blocks of 512 tokens (~12.6M tokens)
LRU_WARMUP = 2_000  # trace requests replayed before position 0 (from the end of the trace)


def lru_hit_fractions(rows: list[tuple[int, int, tuple[int, ...]]], capacity: int = LRU_CAPACITY,
                      warmup: int = LRU_WARMUP) -> list[float]:
    """Per request: min(leading hit blocks x 512, input_length) / input_length through an LRU."""
    lru: OrderedDict[int, None] = OrderedDict()
    n = len(rows)
    out: list[float] = []
    for j in range(-min(warmup, n), n):
        inp, _out, hashes = rows[j % n]
        hit = 0
        for h in hashes:
            if h in lru:
                hit += 1
            else:
                break
        for h in hashes:
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > capacity:
            lru.popitem(last=False)
        if j >= 0:
            out.append(min(hit * 512, inp) / inp if inp else 0.0)
    return out


# --------------------------------------------------------------------------------------------------
# Tenants and keys
# --------------------------------------------------------------------------------------------------

# system prompt + tool definitions length per feature (tokens): the cacheable prefix of single-shot calls
PREFIX_LEN = {"chat": 900, "search": 1300, "summarize": 700, "code_assist": 1800, "agent": 3600,
              "support_copilot": 1400, "doc_review": 2400}
STREAMING = {"chat", "support_copilot", "code_assist", "doc_review"}
RESOURCE_FEATURES = {"search", "agent", "support_copilot"}  # retrieval / memory / tools
# mean logical requests per interaction (used to turn a request budget into arrivals)
MEAN_REQS = {"chat": 3.3, "support_copilot": 4.2, "agent": 8.0, "code_assist": 1.9, "search": 1.0,
             "summarize": 1.0}

SHAPE_CUM = {n: cum_weights(1.0 / (i + 1) for i in range(n)) for n in range(1, 5)}
USER_CUM: dict[int, list[float]] = {}
IP_CUM = {n: cum_weights(1.0 / (i + 1) ** 1.5 for i in range(n)) for n in range(1, 6)}

# shapes shared by several tenants (stock LangChain-style templates)
GENERIC_SHAPES = {
    "summarize": "shp_" + stable_hash("generic", "map_reduce_summarize_v1"),
    "search": "shp_" + stable_hash("generic", "rag_qa_stuff_v2"),
    "chat": "shp_" + stable_hash("generic", "chat_default_system_v1"),
}


@dataclass
class Key:
    key_id: str
    features: tuple[str, ...]
    models: tuple[tuple[str, float], ...]
    ips: tuple[str, ...]
    uas: tuple[str, ...]
    cost_mode: str = "absent"  # "value" | "absent" | "null"  (what the key's gateway reports as cost_usd)
    extra: dict[str, Any] | None = None  # unknown fields the key's gateway adds
    weight: float = 1.0
    active_from: int | None = None
    active_until: int | None = None

    def active(self, t: int) -> bool:
        return (self.active_from is None or t >= self.active_from) and (
            self.active_until is None or t < self.active_until)


@dataclass
class Tenant:
    tenant_id: str
    tz: str
    client: int
    weight: float  # Zipf-like share of the background request budget
    features: dict[str, float]
    keys: list[Key]
    n_users: int
    weekend_target: float = 0.45  # weekend/weekday volume ratio wanted (applied if the client is flatter)
    cross_tenant_allowed: bool = False
    emit_schema: bool = False
    onboard_at: int | None = None
    rate_mods: list[tuple[int, int, float]] = field(default_factory=list)
    description: str = ""

    @property
    def short(self) -> str:
        return self.tenant_id[2:]


UA = {
    "oai_py": "openai-python/1.54.4",
    "oai_node": "OpenAI/NodeJS 4.73.0",
    "anth_py": "anthropic-python/0.39.0",
    "genai": "google-genai/1.2.0",
    "litellm": "litellm/1.52.9",
    "go": "Go-http-client/2.0",
    "langgraph": "langgraph/0.2.60 anthropic-python/0.39.0",
}
EXTRA_LITELLM = {"gateway": "litellm", "region": "eu-west-1"}
EXTRA_ENVOY = {"gateway": "envoy-ai-gateway", "region": "us-east-1", "trace_sampled": True}


def build_tenants(start_ms: int) -> list[Tenant]:
    """The 12 tenants of the sample week (scenarios pick subsets).  Weights are 1/rank (Zipf, s=1)."""
    K = Key
    T: list[Tenant] = [
        Tenant("t_acme", "America/New_York", 30, 1 / 1,
               {"chat": 0.42, "search": 0.30, "summarize": 0.16, "agent": 0.12},
               [K("key_acme_1", ("chat",), ((GPT4O_MINI, 0.7), (GPT4O, 0.3)),
                  ("10.1.1.11", "10.1.1.12", "198.51.100.10"), (UA["oai_py"],), "value"),
                K("key_acme_2", ("search",), ((GPT41_MINI, 1.0),), ("10.1.2.21", "10.1.2.22"), (UA["oai_py"],)),
                K("key_acme_3", ("summarize",), ((HAIKU, 1.0),), ("10.1.3.31",), (UA["anth_py"],)),
                K("key_acme_4", ("agent",), ((SONNET, 0.8), (GPT41, 0.2)), ("10.1.4.41", "10.1.4.42"),
                  (UA["litellm"],), "null")],
               n_users=420, weekend_target=0.45, description="B2B SaaS: assistant chat, RAG search, summaries"),
        Tenant("t_globex", "Europe/Berlin", 67, 1 / 2,
               {"code_assist": 0.50, "chat": 0.34, "agent": 0.16},
               [K("key_globex_1", ("code_assist",), ((SONNET, 0.75), (GPT41, 0.25)),
                  ("10.2.1.11", "198.51.100.20"), (UA["litellm"],), "value"),
                K("key_globex_2", ("chat",), ((HAIKU, 0.6), (SONNET, 0.4)), ("10.2.2.21",), (UA["anth_py"],)),
                K("key_globex_3", ("agent",), ((SONNET, 0.75), (O3, 0.25)), ("10.2.3.31", "10.2.3.32"),
                  (UA["litellm"],), "null"),
                K("key_globex_4", ("code_assist",), ((GPT41_MINI, 1.0),), ("10.2.4.41",), (UA["go"],),
                  weight=0.15)],
               n_users=260, weekend_target=0.35, emit_schema=True,
               description="developer tools: IDE code assistant, chat, coding agent"),
        Tenant("t_initech", "America/New_York", 72, 1 / 3,
               {"summarize": 0.6, "search": 0.4},
               [K("key_initech_1", ("search",), ((GPT4O_MINI, 1.0),), ("10.3.1.11", "10.3.1.12"), (UA["oai_node"],)),
                K("key_initech_2", ("summarize",), ((GPT41_MINI, 0.7), (HAIKU, 0.3)), ("10.3.2.21",),
                  (UA["litellm"],)),
                K("key_initech_3", ("summarize",), ((GPT41_MINI, 1.0),), ("10.3.9.5",),
                  ("initech-batch/2.3 python-httpx/0.27.2",), weight=0.0)],  # nightly batch only
               n_users=150, weekend_target=0.30, description="document processing; nightly batch"),
        Tenant("t_hooli", "UTC", 14, 1 / 4,
               {"search": 0.45, "chat": 0.30, "summarize": 0.25},
               [K("key_hooli_1", ("chat",), ((FLASH, 0.8), (GPRO, 0.2)), ("10.4.1.11", "10.4.1.12", "10.4.1.13"),
                  (UA["genai"],)),
                K("key_hooli_2", ("search",), ((FLASH, 1.0),), ("10.4.2.21", "10.4.2.22"), (UA["genai"],)),
                K("key_hooli_3", ("summarize",), ((GPT4O_MINI, 1.0),), ("10.4.3.31",), (UA["litellm"],),
                  "null", extra=EXTRA_LITELLM)],
               n_users=300, weekend_target=0.80, description="24/7 API platform (flat ServeGen client)"),
        Tenant("t_umbrella", "Asia/Tokyo", 66, 1 / 5,
               {"chat": 0.85, "summarize": 0.15},
               [K("key_umbrella_1", ("chat",), ((GPT4O_MINI, 0.6), (FLASH, 0.4)), ("10.5.1.11", "10.5.1.12"),
                  (UA["litellm"],)),
                K("key_umbrella_2", ("chat",), ((GPT4O, 1.0),), ("10.5.2.21",), (UA["oai_py"],), weight=0.5),
                K("key_umbrella_3", ("summarize",), ((FLASH, 1.0),), ("10.5.3.31",), (UA["genai"],))],
               n_users=900, weekend_target=0.95, description="consumer companion chat app (evening peak)"),
        Tenant("t_stark", "UTC", 23, 1 / 6,
               {"code_assist": 0.45, "agent": 0.30, "search": 0.25},
               [K("key_stark_1", ("agent",), ((SONNET, 0.6), (GPT41, 0.4)), ("10.6.1.11", "10.6.1.12"),
                  (UA["litellm"],), "value"),
                K("key_stark_2", ("code_assist",), ((SONNET, 1.0),), ("10.6.2.21",), (UA["anth_py"],)),
                K("key_stark_3", ("search",), ((GPT41_MINI, 1.0),), ("10.6.3.31",), (UA["oai_py"],)),
                K("key_stark_4", ("agent",), ((SONNET, 1.0),), ("10.6.9.5",), ("stark-scheduler/1.4",),
                  "value", weight=0.0)],  # scheduled agent only
               n_users=120, weekend_target=0.75, description="engineering platform, round the clock"),
        Tenant("t_wayne", "Europe/Berlin", 40, 1 / 7,
               {"chat": 0.6, "summarize": 0.4},
               [K("key_wayne_1", ("chat",), ((GPT4O, 1.0),), ("10.7.1.11", "198.51.100.70"), (UA["oai_node"],)),
                K("key_wayne_2", ("summarize",), ((GPT4O_MINI, 0.8), (HAIKU, 0.2)), ("10.7.2.21",),
                  (UA["litellm"],), "value", extra=EXTRA_LITELLM)],
               n_users=140, weekend_target=0.40, description="financial services back office"),
        Tenant("t_wonka", "Europe/Berlin", 64, 1 / 8,
               {"chat": 0.7, "search": 0.3},
               [K("key_wonka_1", ("chat",), ((GPT4O, 1.0),), ("10.8.1.11",), (UA["oai_py"],)),
                K("key_wonka_2", ("search",), ((GPT4O_MINI, 1.0),), ("10.8.2.21",), (UA["oai_py"],),
                  extra=EXTRA_ENVOY)],
               n_users=80, weekend_target=0.35, description="retail customer service bot"),
        Tenant("t_tyrell", "Asia/Tokyo", 93, 1 / 9,
               {"chat": 0.4, "code_assist": 0.3, "agent": 0.3},
               [K("key_tyrell_1", ("chat",), ((HAIKU, 1.0),), ("10.9.1.11", "10.9.1.12"), (UA["anth_py"],)),
                K("key_tyrell_2", ("code_assist",), ((GPT41, 0.5), (GPT41_MINI, 0.5)), ("10.9.2.21",),
                  (UA["oai_py"],)),
                K("key_tyrell_3", ("agent",), ((SONNET, 1.0),), ("10.9.3.31",), (UA["langgraph"],), "value")],
               n_users=110, weekend_target=0.40, description="R&D lab: agents and coding"),
        Tenant("t_cyberdyne", "UTC", 103, 1 / 10,
               {"summarize": 0.7, "search": 0.3},
               [K("key_cyberdyne_1", ("summarize",), ((FLASH, 0.7), (GPT4O_MINI, 0.3)),
                  ("10.10.1.11", "10.10.1.12"), (UA["litellm"],)),
                K("key_cyberdyne_2", ("search",), ((FLASH, 1.0),), ("10.10.2.21",), (UA["genai"],))],
               n_users=40, weekend_target=0.90, description="ETL pipelines, busiest at night UTC"),
        Tenant("t_support", "UTC", 43, 1 / 11,
               {"support_copilot": 0.8, "search": 0.2},
               [K("key_support_1", ("support_copilot",), ((SONNET, 0.5), (GPT4O, 0.5)), ("10.11.1.11",),
                  (UA["litellm"],)),
                K("key_support_2", ("search",), ((GPT41_MINI, 1.0),), ("10.11.2.21",), (UA["litellm"],))],
               n_users=35, weekend_target=0.30, cross_tenant_allowed=True,
               description="internal support tenant; reads customers' resources by design"),
        Tenant("t_vandelay", "America/New_York", 69, 1 / 12,
               {"chat": 0.5, "search": 0.5},
               [K("key_vandelay_1", ("chat",), ((GPT4O_MINI, 1.0),), ("10.12.1.11", "198.51.100.120"),
                  (UA["oai_node"],)),
                K("key_vandelay_2", ("search",), ((FLASH, 1.0),), ("10.12.2.21",), (UA["genai"],))],
               n_users=60, weekend_target=0.40, description="new customer, onboarded mid-week"),
    ]
    return T


# --------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------


@dataclass
class Window:
    """A time-boxed change of behaviour that the per-request code consults."""

    kind: str  # cache_churn | cache_dip | cache_off | cancel_tax | retry_storm | cancel_spike
    tenant: str
    start: int
    end: int
    feature: str | None = None
    key: str | None = None
    param: float = 0.0
    model: str | None = None  # cache_off: only calls to this model

    def match(self, t: int, tenant: str, feature: str | None, key: str) -> bool:
        return (self.start <= t < self.end and tenant == self.tenant
                and (self.feature is None or feature == self.feature)
                and (self.key is None or key == self.key))


@dataclass
class Req:
    """Result of one logical request."""

    end: int
    ok: bool
    cost: float


class Gen:
    """Builds one stream: background traffic of some tenants, plus injected incidents/negatives."""

    background_scale = 1.0  # build_scenario(scale=...) thins the background for quick tests

    def __init__(self, data: PublicData, seed: int, name: str, start: str, days: float,
                 tenants: list[Tenant], background_requests: int) -> None:
        self.data = data
        self.seed = seed
        self.name = name
        self.start = parse_ts(start)
        self.end = self.start + int(days * DAY)
        self.tenants = {t.tenant_id: t for t in tenants}
        self.background_requests = int(background_requests * Gen.background_scale)
        self.events: list[tuple[int, int, dict[str, Any]]] = []
        self.labels: list[dict[str, Any]] = []
        self.windows: list[Window] = []
        self._seq = 0
        self._ids: dict[str, int] = {}
        self._cursors: dict[tuple[str, str, str], CacheCursor] = {}
        self._rngs: dict[str, Rng] = {}
        self.spend: dict[str, dict[str, float]] = {}  # tag -> tenant -> $
        self.key_spend: dict[str, float] = {}  # background spend per key
        self.shapes: dict[tuple[str, str], list[str]] = {}
        self.onboarded: dict[str, int] = {}
        self._prefixes: dict[tuple[str, str, str], str] = {}
        self._win_tenants: set[str] = set()
        self._salts: dict[str, int] = {}
        self._n_windows = 0

    # randomness & ids ----------------------------------------------------------------------
    def rng(self, name: str) -> Rng:
        """An independent, named random stream (adding one stream never shifts the others)."""
        if name not in self._rngs:
            self._rngs[name] = Rng((self.seed << 64) | (zlib.crc32(self.name.encode()) << 32)
                                   | zlib.crc32(name.encode()))
        return self._rngs[name]

    def new_id(self, prefix: str) -> str:
        n = self._ids.get(prefix, 0)
        self._ids[prefix] = n + 1
        salt = self._salts.get(prefix)
        if salt is None:
            salt = self._salts[prefix] = zlib.crc32(f"{self.seed}/{self.name}/{prefix}".encode()) << 32
        return f"{prefix}_{splitmix64(salt + n) & 0xFFFFFFFFFF:010x}"

    # prompt identity --------------------------------------------------------------------------
    def prefix_hash(self, tenant: str, feature: str, version: str = "v1") -> str:
        k = (tenant, feature, version)
        if k not in self._prefixes:
            self._prefixes[k] = "pfx_" + stable_hash("prefix", tenant, feature, version, n=16)
        return self._prefixes[k]

    def tenant_shapes(self, tenant: str, feature: str) -> list[str]:
        k = (tenant, feature)
        if k not in self.shapes:
            n = 1 + zlib.crc32(f"{tenant}/{feature}".encode()) % 3
            self.shapes[k] = ["shp_" + stable_hash("shape", tenant, feature, i) for i in range(n)]
        return self.shapes[k]

    def pick_shape(self, rng: Rng, tenant: str, feature: str) -> str:
        if feature in GENERIC_SHAPES and rng.random() < 0.22:
            return GENERIC_SHAPES[feature]
        shapes = self.tenant_shapes(tenant, feature)
        return shapes[wchoice(rng, SHAPE_CUM[len(shapes)])]

    # source-time mapping ------------------------------------------------------------------------
    def src_seconds(self, tenant: Tenant, t: int) -> int:
        """UTC ms -> seconds into the tenant's ServeGen client trace, same local weekday and time.

        ServeGen timestamps are the service's local time (office peaks at 09-11 and 14-17 with a
        lunch dip; source days 4-5 and 11-12 are the weekends, so source day 6 is a Monday).  The
        tenant's local date d maps to source day 6 + (d - anchor Monday), which keeps days
        consecutive and weekdays aligned; the result stays within source days 5..13.
        """
        ldt = local_dt(tenant.tz, t)
        anchor_local = local_dt(tenant.tz, self.start).date() + timedelta(days=1)
        anchor_monday = anchor_local - timedelta(days=anchor_local.weekday())
        day = 6 + (ldt.date() - anchor_monday).days
        while day > 13:
            day -= 7
        while day < 0:
            day += 7
        return day * 86400 + ldt.hour * 3600 + ldt.minute * 60 + ldt.second

    def is_weekend(self, tenant: Tenant, t: int) -> bool:
        return local_dt(tenant.tz, t).weekday() >= 5

    def rate_series(self, tenant: Tenant) -> tuple[np.ndarray, np.ndarray]:
        """Per 10-minute UTC window: relative arrival intensity and renewal shape (a, is_weibull)."""
        ct = self.data.client(tenant.client)
        n = (self.end - self.start) // WINDOW
        lam = np.zeros(n)
        shape = np.ones(n)
        weib = np.zeros(n, dtype=bool)
        days = ct.rate.reshape(14, 144)
        wk = days[6:11].mean()
        we = days[11:13].mean()
        we_factor = min(1.0, tenant.weekend_target / (we / wk)) if wk > 0 and we > 0 else 1.0
        for w in range(n):
            t = self.start + w * WINDOW + WINDOW // 2
            s = self.src_seconds(tenant, t) // 600
            r = ct.rate[s]
            if self.is_weekend(tenant, t):
                r *= we_factor
            lam[w] = r
            if ct.weibull[s]:
                weib[w] = True
                shape[w] = float(np.clip(ct.shape[s], 0.4, 2.5))
            else:
                cv = float(np.clip(ct.cv[s], 0.6, 3.0)) if ct.cv[s] > 0 else 1.0
                shape[w] = 1.0 / (cv * cv)
        return lam, np.where(weib, -shape, shape)  # negative = Weibull shape c

    def arrivals(self, rng: Rng, lam: np.ndarray, shp: np.ndarray,
                 t_from: int | None = None) -> list[int]:
        """Renewal process in operational time: unit-mean Gamma/Weibull gaps mapped through the
        cumulative intensity, so the rate follows lam and the burstiness follows the window's cv."""
        cum = [0.0, *cum_weights(lam)]
        total = cum[-1]
        lam = [float(x) for x in lam]
        shp = [float(x) for x in shp]
        out: list[int] = []
        u = rng.random()
        while u < total:
            w = bisect.bisect_right(cum, u) - 1
            w = min(w, len(lam) - 1)
            frac = (u - cum[w]) / lam[w] if lam[w] > 0 else 0.0
            t = self.start + int((w + frac) * WINDOW)
            if t_from is None or t >= t_from:
                out.append(t)
            a = shp[w]
            if a > 0:
                g = rng.gamma(a) / a
            else:
                c = -a
                g = rng.weibull(c) / math.gamma(1 + 1 / c)
            u += max(g, 1e-6)
        return out

    # cache ----------------------------------------------------------------------------------------
    def cursor(self, tenant: str, feature: str, model: str) -> CacheCursor:
        k = (tenant, feature, model)
        if k not in self._cursors:
            kind = "synthetic" if feature in ("agent", "code_assist") else "conversation"
            fr = self.data.hit_fractions(kind)
            start = zlib.crc32(f"{self.seed}/{tenant}/{feature}/{model}".encode()) % len(fr)
            self._cursors[k] = CacheCursor(fr, start)
        return self._cursors[k]

    def has_windows(self, tenant: str) -> bool:
        if len(self.windows) != self._n_windows:
            self._win_tenants = {w.tenant for w in self.windows}
            self._n_windows = len(self.windows)
        return tenant in self._win_tenants

    def active_window(self, kind: str, t: int, tenant: str, feature: str | None, key: str) -> Window | None:
        if not self.has_windows(tenant):
            return None
        for w in self.windows:
            if w.tenant == tenant and w.kind == kind and w.match(t, tenant, feature, key):
                return w
        return None

    def cache_tokens(self, t: int, tenant: str, key: str, feature: str, model: str, inp: int,
                     tail: int, session_turn: bool) -> tuple[int, int, str | None]:
        """-> (cached_input_tokens, cache_write_tokens, prefix_hash override)."""
        frac = self.cursor(tenant, feature, model).next_fraction()
        anthropic = provider_of(model) == "anthropic"
        # what sits before the last cache breakpoint: the whole history in sessions, else the prefix
        cacheable = max(0, inp - tail) if session_turn else min(inp, PREFIX_LEN.get(feature, 1000))
        pfx = None
        mode = None
        for kind in (("cache_churn", "cache_off", "cache_dip") if self.has_windows(tenant) else ()):
            w = self.active_window(kind, t, tenant, feature, key)
            if w is not None and (w.model is None or w.model == model):
                mode = kind
                break
        if mode == "cache_churn":  # timestamp in the system prompt: a new prefix on every request
            pfx = "pfx_" + stable_hash("churn", tenant, feature, t, n=16)
        if inp < MIN_CACHEABLE.get(model, 1024) or mode is not None:
            cached = 0
        else:
            cached = min(inp - min(tail, inp), int(frac * inp) // 128 * 128)
            if anthropic:
                cached = min(cached, cacheable)
            cached = max(0, cached)
        write = 0
        if anthropic and mode != "cache_off" and cacheable >= MIN_CACHEABLE.get(model, 1024):
            write = max(0, cacheable - cached)
        return cached, write, pfx

    # per-request emission ---------------------------------------------------------------------
    def _emit(self, t: int, ev: dict[str, Any], tag: str, cost: float) -> None:
        self.events.append((t, self._seq, ev))
        self._seq += 1
        if cost:
            self.spend.setdefault(tag, {})
            self.spend[tag][ev["tenant_id"]] = self.spend[tag].get(ev["tenant_id"], 0.0) + cost
            if tag == "bg":
                self.key_spend[ev["api_key_id"]] = self.key_spend.get(ev["api_key_id"], 0.0) + cost

    def latency(self, rng: Rng, model: str, inp: int, cached: int, out: int) -> int:
        base, pre, tpot = LATENCY.get(model, (500, 20, 12.0))
        ms = base + pre * (inp - cached) / 1000 + 0.12 * pre * cached / 1000 + tpot * out
        return int(ms * rng.lognormal(0.0, 0.25))

    def make_event(self, *, tenant: Tenant, key: Key, model: str, inp: int, out: int, cached: int, write: int,
                   status: int, latency: int, user: str | None, session: str | None, request: str | None,
                   attempt: int, feature: str | None, cancelled: bool, ip: str | None, ua: str | None,
                   shape: str | None, prefix: str | None, resource: str | None) -> tuple[dict[str, Any], float]:
        c = cost_usd(model, inp, cached, write, out)
        # one id per attempt; it embeds the logical request's id (gateways often derive it that way)
        ev: dict[str, Any] = {"event_id": f"evt_{request[4:] if request else self.new_id('x')[2:]}-{attempt}",
                              "ts": None}
        if tenant.emit_schema:
            ev["schema"] = "llm.usage.v1"
        ev["tenant_id"] = tenant.tenant_id
        ev["api_key_id"] = key.key_id
        if user is not None:
            ev["user_id"] = user
        if session is not None:
            ev["session_id"] = session
        if request is not None:
            ev["request_id"] = request
        ev["attempt"] = attempt
        if feature is not None:
            ev["feature"] = feature
        ev["provider"] = provider_of(model)
        ev["model"] = model
        ev["input_tokens"] = int(inp)
        ev["cached_input_tokens"] = int(cached)
        if write or ev["provider"] == "anthropic":  # only Anthropic reports cache writes
            ev["cache_write_tokens"] = int(write)
        ev["output_tokens"] = int(out)
        if key.cost_mode == "value":
            ev["cost_usd"] = round(c, 8)
        elif key.cost_mode == "null":
            ev["cost_usd"] = None
        ev["status"] = int(status)
        ev["latency_ms"] = int(latency)
        ev["cancelled"] = bool(cancelled)
        if ip is not None:
            ev["source_ip"] = ip
        if ua is not None:
            ev["user_agent"] = ua
        if shape is not None:
            ev["prompt_shape"] = shape
        if prefix is not None:
            ev["prefix_hash"] = prefix
        if resource is not None:
            ev["resource_tenant_id"] = resource
        if key.extra:
            ev.update(key.extra)
        return ev, c

    def request(self, rng: Rng, t0: int, tenant: Tenant, key: Key, feature: str | None,
                model: str, inp: int, out: int, *, user: str | None = None, session: str | None = None,
                shape: str | None = None, prefix: str | None = None, resource: str | None = None,
                tail: int | None = None, session_turn: bool = False, ip: str | None = None,
                ua: str | None = None, tag: str = "bg", errors: bool = True, retries: bool = True,
                forced_status: int | None = None, cancel_p: float | None = None,
                cache: tuple[int, int] | None = None) -> Req:
        """Emit the attempts of one logical request starting at t0; returns when the last one ended."""
        tid, kid = tenant.tenant_id, key.key_id
        inp = int(max(1, min(inp, MAX_CONTEXT.get(model, 200000) - 1024)))
        out = int(max(1, min(out, MAX_OUTPUT.get(model, 8192))))
        ip = ip if ip is not None else key.ips[0]
        ua = ua if ua is not None else key.uas[0]
        if tail is None:
            tail = max(0, inp - PREFIX_LEN.get(feature or "", 1000))
        request_id = self.new_id("req")
        common = dict(tenant=tenant, key=key, user=user, session=session, request=request_id, feature=feature,
                      ip=ip, ua=ua, shape=shape, resource=resource)
        prov = provider_of(model)

        # one-shot failures (client errors) --------------------------------------------------
        if forced_status is not None or (errors and rng.random() < 0.004):
            st = forced_status or (400, 401, 403, 404)[wchoice(rng, [0.6, 0.7, 0.8, 1.0])]
            lat = int(rng.uniform(15, 250))
            ev, _ = self.make_event(model=model, inp=0, out=0, cached=0, write=0, status=st, latency=lat,
                                    attempt=1, cancelled=False, prefix=prefix, **common)
            self._emit(t0 + lat, ev, tag, 0.0)
            return Req(t0 + lat, False, 0.0)

        # plan the failed attempts before the final one ---------------------------------------------
        windowed = self.has_windows(tid)
        storm = self.active_window("retry_storm", t0, tid, feature, kid) if retries and windowed else None
        fails: list[int] = []
        final_ok = True
        if retries and windowed and storm is None and self.active_window("retry_blip", t0, tid, feature, kid):
            fails = [429]  # provider-wide rate-limit blip: one quick retry, then success
        elif storm is not None:
            n_att = int(storm.param or 9)
            fails = [rng.pick((500, 503, 429), (0.35, 0.5, 0.15)) for _ in range(n_att - 1)]
            final_ok = rng.random() < 0.8
        elif retries and rng.random() < 0.015:
            k = rng.pick((1, 2, 3), (0.6, 0.28, 0.12))
            pool, p = {"openai": ([429, 500, 503], [0.55, 0.15, 0.30]),
                       "anthropic": ([429, 529, 500, 503], [0.4, 0.35, 0.1, 0.15]),
                       "google": ([429, 503, 500], [0.5, 0.35, 0.15])}[prov]
            fails = [rng.pick(pool, p) for _ in range(k)]
            final_ok = rng.random() < 0.92

        t = t0
        attempt = 1
        total = 0.0
        # cache outcome is decided once for the logical request (the prompt is the same each attempt)
        if cache is not None:
            cached, write, pfx = cache[0], cache[1], None
        else:
            cached, write, pfx = self.cache_tokens(t0, tid, kid, feature or "", model, inp, tail, session_turn)
        prefix_eff = pfx or prefix
        for i, st in enumerate(fails):
            billed = storm is not None and st in (500, 503) and rng.random() < 0.65
            if billed:  # upstream finished (or streamed part) and billed, the gateway/SDK timed out
                o = int(out * rng.uniform(0.3, 1.0))
                lat = self.latency(rng, model, inp, cached, o) + int(rng.uniform(2000, 8000))
                ev, c = self.make_event(model=model, inp=inp, out=o, cached=cached, write=write if i == 0 else 0,
                                        status=st, latency=lat, attempt=attempt, cancelled=False,
                                        prefix=prefix_eff, **common)
            else:
                lat = int(rng.uniform(20, 250)) if st == 429 else int(rng.lognormal(math.log(600), 0.8))
                ev, c = self.make_event(model=model, inp=0, out=0, cached=0, write=0, status=st, latency=lat,
                                        attempt=attempt, cancelled=False, prefix=prefix_eff, **common)
            self._emit(t + lat, ev, tag, c)
            total += c
            t += lat
            # backoff: gateway retries fast, SDK retries with exponential backoff (+ Retry-After on 429)
            if storm is not None:
                back = int(rng.uniform(200, 1000)) if (i + 1) % 3 else int(rng.uniform(1000, 4000))
            else:
                back = int(500 * 2 ** i * rng.uniform(0.5, 1.5)) + (int(rng.uniform(1000, 8000)) if st == 429 else 0)
            t += back
            attempt += 1
        if not final_ok:
            st = fails[-1] if fails else 503
            lat = int(rng.uniform(20, 250)) if st == 429 else int(rng.lognormal(math.log(800), 0.8))
            ev, c = self.make_event(model=model, inp=0, out=0, cached=0, write=0, status=st, latency=lat,
                                    attempt=attempt, cancelled=False, prefix=prefix_eff, **common)
            self._emit(t + lat, ev, tag, c)
            return Req(t + lat, False, total)

        # the successful (final) attempt --------------------------------------------------------
        cancelled = False
        o = out
        if model == O3:
            o = int(min(MAX_OUTPUT[O3], out * 2 + rng.integers(300, 3000)))  # reasoning tokens are billed output
        lat = self.latency(rng, model, inp, cached, o)
        tax = self.active_window("cancel_tax", t0, tid, feature, kid) if windowed else None
        p_cancel = cancel_p if cancel_p is not None else (0.012 if feature in STREAMING else 0.0015)
        if tax is not None:
            p_cancel = tax.param
        elif windowed and self.active_window("cancel_spike", t0, tid, feature, kid):
            p_cancel = 0.25
        if rng.random() < p_cancel:
            cancelled = True
            frac = rng.uniform(0.05, 0.7)
            base, pre, tpot = LATENCY.get(model, (500, 20, 12.0))
            ttft = base + pre * (inp - cached) / 1000
            lat = int(ttft + tpot * o * frac * rng.uniform(0.8, 1.2))
            if tax is None:
                o = max(0, int(o * frac))  # billed only what was streamed before the stop
            # with the tax bug the upstream keeps generating and the whole output is billed
        ev, c = self.make_event(model=model, inp=inp, out=o, cached=cached, write=write, status=200, latency=lat,
                                attempt=attempt, cancelled=cancelled, prefix=prefix_eff, **common)
        self._emit(t + lat, ev, tag, c)
        total += c
        return Req(t + lat, True, total)

    # token sampling ------------------------------------------------------------------------
    def azure_pair(self, rng: Rng, kind: str) -> tuple[int, int]:
        ctx, gen = self.data.azure(kind)
        i = int(rng.integers(len(ctx)))
        return int(ctx[i]), int(gen[i])

    def servegen_pair(self, rng: Rng, tenant: Tenant, t: int) -> tuple[int, int]:
        s = self.src_seconds(tenant, t)
        pi = self.data.token_pdf(tenant.client, s, "input_tokens")
        po = self.data.token_pdf(tenant.client, s, "output_tokens")
        if pi is None or po is None:
            return self.azure_pair(rng, "conv")
        return pi.sample(rng), max(1, po.sample(rng))

    def mooncake_row(self, rng: Rng, kind: str) -> tuple[int, int]:
        rows = self.data.mooncake(kind)
        r = rows[int(rng.integers(len(rows)))]
        return r[0], r[1]

    # users, keys ---------------------------------------------------------------------------
    def pick_user(self, rng: Rng, tenant: Tenant) -> str:
        n = tenant.n_users
        if n not in USER_CUM:
            USER_CUM[n] = cum_weights(1.0 / (i + 1) ** 1.1 for i in range(n))
        i = wchoice(rng, USER_CUM[n])
        return f"u_{tenant.short}_{i:04d}"

    def pick_key(self, rng: Rng, tenant: Tenant, feature: str, t: int) -> Key | None:
        ks = [k for k in tenant.keys if feature in k.features and k.active(t) and k.weight > 0]
        if not ks:
            return None
        if len(ks) == 1:
            return ks[0]
        return ks[wchoice(rng, cum_weights(k.weight for k in ks))]

    def pick_model(self, rng: Rng, key: Key) -> str:
        if len(key.models) == 1:
            return key.models[0][0]
        return key.models[wchoice(rng, cum_weights(p for _, p in key.models))][0]

    def pick_ip(self, rng: Rng, key: Key) -> str:
        return key.ips[wchoice(rng, IP_CUM[len(key.ips)])]

    # interactions ----------------------------------------------------------------------------
    def interaction(self, rng: Rng, tenant: Tenant, feature: str, t: int, *, tag: str = "bg",
                    key: Key | None = None, model: str | None = None, turns: int | None = None,
                    user: str | None = None, resource: str | None = None) -> int:
        """One user-level interaction; returns the time its last request ended."""
        key = key or self.pick_key(rng, tenant, feature, t)
        if key is None:
            return t
        model = model or self.pick_model(rng, key)
        ip = self.pick_ip(rng, key)
        ua = key.uas[int(rng.integers(len(key.uas)))]
        tid = tenant.tenant_id
        shape = self.pick_shape(rng, tid, feature)
        prefix = self.prefix_hash(tid, feature)
        kw = dict(ip=ip, ua=ua, tag=tag, shape=shape, prefix=prefix)
        if feature in ("chat", "support_copilot"):
            user = user or self.pick_user(rng, tenant)
            session = self.new_id("ses")
            n = turns or int(min(25, rng.geometric(0.3 if feature == "chat" else 0.24)))
            if feature == "support_copilot" and resource is None:
                resource = self.support_customer(rng)
            ctx, gen = self.azure_pair(rng, "conv")
            inp = max(ctx, PREFIX_LEN[feature] + 20)
            out = gen
            tail = inp - PREFIX_LEN[feature]
            for i in range(n):
                r = self.request(rng, t, tenant, key, feature, model, inp, out, user=user, session=session,
                                 resource=resource, tail=tail, session_turn=i > 0, **kw)
                t = r.end
                if not r.ok and rng.random() < 0.5:
                    break
                t += int(clip(rng.lognormal(math.log(60_000), 0.75), 20_000, 300_000))
                tail = int(clip(rng.lognormal(math.log(60), 1.0), 3, 4000))
                if feature == "support_copilot" and rng.random() < 0.3:
                    tail += int(rng.integers(300, 2500))  # pasted ticket / log excerpt
                inp = inp + out + tail
                _, out = self.azure_pair(rng, "conv")
            return t
        if feature == "agent":
            session = self.new_id("run")
            user = user or (self.pick_user(rng, tenant) if rng.random() < 0.6 else None)
            n = turns or int(clip(round(rng.lognormal(math.log(7), 0.6)), 2, 40))
            # the run's final context is a Mooncake (long-context) prompt; it is reached by re-sending the
            # history each step plus tool results (exponential shares of the growth), so steps grow smoothly
            final_in, final_out = self.mooncake_row(rng, "synthetic")
            outs = [int(clip(self.mooncake_row(rng, "synthetic")[1] * 0.35, 15, 2000)) for _ in range(n - 1)]
            outs.append(final_out)
            first = PREFIX_LEN["agent"] + int(clip(rng.lognormal(math.log(1200), 0.8), 50, 20_000))
            grow = max(0, final_in - first - sum(outs[:-1]))
            shares = [rng.gamma(1.0) for _ in range(n - 1)]
            tot = sum(shares) or 1.0
            prev_in = prev_out = 0
            for i in range(n):
                out = outs[i]
                inp = first if i == 0 else prev_in + prev_out + 60 + int(grow * shares[i - 1] / tot)
                tail = inp - PREFIX_LEN["agent"] if i == 0 else inp - prev_in
                r = self.request(rng, t, tenant, key, feature, model, inp, out, user=user, session=session,
                                 resource=resource or tid, tail=tail, session_turn=i > 0, **kw)
                t = r.end + int(clip(rng.lognormal(math.log(2500), 0.9), 200, 60_000))
                if not r.ok and rng.random() < 0.3:
                    break
                prev_in, prev_out = inp, out
            return t
        if feature == "code_assist":
            user = user or self.pick_user(rng, tenant)
            n = turns or int(min(8, rng.geometric(0.55)))
            for _ in range(n):
                ctx, gen = self.azure_pair(rng, "code")
                r = self.request(rng, t, tenant, key, feature, model, ctx, gen, user=user, **kw)
                t = r.end + int(rng.uniform(1000, 20_000))
            return t
        if feature in ("search", "summarize"):
            if self.data.has_dataset(tenant.client):
                inp, out = self.servegen_pair(rng, tenant, t)
            elif feature == "summarize":
                ctx, out = self.azure_pair(rng, "conv")
                inp = ctx * 2 + 300
            else:
                inp, out = self.azure_pair(rng, "conv")
            inp = max(inp, 40)
            if user is None and rng.random() < 0.7:
                user = self.pick_user(rng, tenant)
            res = (resource or tid) if feature == "search" else None
            if tenant.cross_tenant_allowed and feature == "search" and resource is None:
                res = self.support_customer(rng)
            r = self.request(rng, t, tenant, key, feature, model, inp, out, user=user, resource=res, **kw)
            return r.end
        raise ValueError(feature)

    def support_customer(self, rng: Rng) -> str:
        others = [t for t in self.tenants.values() if not t.cross_tenant_allowed]
        return others[wchoice(rng, cum_weights(t.weight for t in others))].tenant_id

    # background ------------------------------------------------------------------------------------
    def background(self) -> None:
        tenants = list(self.tenants.values())
        wsum = sum(t.weight for t in tenants)
        for tenant in tenants:
            rng = self.rng(f"bg/{tenant.tenant_id}")
            lam, shp = self.rate_series(tenant)
            if tenant.onboard_at is not None:
                for w in range(len(lam)):
                    t = self.start + w * WINDOW
                    if t < tenant.onboard_at:
                        lam[w] = 0.0
                    elif t < tenant.onboard_at + 3 * HOUR:  # ramp-up over the first hours
                        lam[w] *= (t - tenant.onboard_at + WINDOW) / (3 * HOUR)
            fw = np.array(list(tenant.features.values()))
            fw = fw / fw.sum()
            mean_reqs = float(sum(p * MEAN_REQS[f] for f, p in zip(tenant.features, fw, strict=True)))
            n_inter = self.background_requests * tenant.weight / wsum / mean_reqs
            lam = lam / lam.sum() * n_inter
            for a, b, f in tenant.rate_mods:  # e.g. the Monday-morning ramp
                for w in range(len(lam)):
                    if a <= self.start + w * WINDOW < b:
                        lam[w] *= f
            feats = list(tenant.features)
            fcum = cum_weights(fw)
            for t in self.arrivals(rng, lam, shp):
                feature = feats[wchoice(rng, fcum)]
                self.interaction(rng, tenant, feature, t)

    # labels -----------------------------------------------------------------------------------------
    def label(self, detector: str, kind: str, start: int, end: int, entities: dict[str, Any], description: str,
              also_expected: Iterable[str] = ()) -> None:
        lab: dict[str, Any] = {"detector": detector, "kind": kind, "start": fmt_ts(start), "end": fmt_ts(end),
                               "entities": entities, "description": description}
        if also_expected:
            lab["also_expected"] = list(also_expected)
        self.labels.append(lab)

    # output -------------------------------------------------------------------------------------------
    def finish(self) -> list[dict[str, Any]]:
        """Sort by time, clip to the stream window, assign event ids and ts strings."""
        evs = [e for e in self.events if self.start <= e[0] < self.end]
        evs.sort(key=lambda e: (e[0], e[1]))
        out = []
        for t, _, ev in evs:
            ev["ts"] = fmt_ts(t)
            out.append(ev)
        self.labels.sort(key=lambda lab: (lab["start"], lab["detector"], lab["kind"]))
        return out


# --------------------------------------------------------------------------------------------------
# Incidents and hard negatives (shared by the sample and the scenarios)
# --------------------------------------------------------------------------------------------------

ENUM_MODELS = [OPUS, SONNET, GPT4O, O3, GPRO, "gpt-4-32k", "gpt-4-turbo", "claude-3-opus-20240229",
               "claude-2.1", "claude-3-5-sonnet-20241022", "anthropic.claude-3-opus-20240229-v1:0",
               "gemini-1.5-pro", "o1", "gpt-4.5-preview", HAIKU, GPT41]


ENUM_ALLOWED = {OPUS, SONNET, HAIKU, GPT4O, GPT41, GPT41_MINI}


def key_of(g: Gen, key_id: str) -> tuple[Tenant, Key]:
    for t in g.tenants.values():
        for k in t.keys:
            if k.key_id == key_id:
                return t, k
    raise KeyError(key_id)


def inc_llmjacking(g: Gen, key_id: str, start: int, hours: float, rate_per_s: float = 0.25,
                   ips: tuple[str, ...] = ("203.0.113.45", "203.0.113.46", "203.0.113.112"),
                   uas: tuple[str, ...] = ("python-requests/2.32.3", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)"),
                   kind: str = "llmjacking", note: str = "") -> None:
    """Stolen key: model enumeration (403/404 bursts) from new IPs, then heavy off-hours use of the most
    expensive model with huge outputs (reverse-proxy resale)."""
    rng = g.rng(f"inc/llmjacking/{key_id}/{start}")
    tenant, key = key_of(g, key_id)
    t = start
    # enumeration: ~10 minutes, every listed model, mostly refused
    n_refused = 0
    for _ in range(3):
        for m in ENUM_MODELS:
            t += int(rng.uniform(1500, 9000))
            ok = m in ENUM_ALLOWED  # the gateway lets the key use these; others are refused or unknown
            st = 200 if ok else (403 if m in PRICES else 404)
            if ok:
                g.request(rng, t, tenant, key, None, m, int(rng.integers(8, 30)), int(rng.integers(1, 12)),
                          ip=ips[0], ua=uas[0], tag="incident", errors=False, retries=False, cancel_p=0.0,
                          cache=(0, 0), shape="shp_" + stable_hash("probe", key_id))
            else:
                n_refused += 1
                g.request(rng, t, tenant, key, None, m, 10, 1, ip=ips[0], ua=uas[0], tag="incident",
                          forced_status=st, shape="shp_" + stable_hash("probe", key_id))
    enum_end = t
    # abuse: bursty high volume of Opus with huge outputs from rotating IPs
    end = enum_end + int(hours * HOUR)
    shape = "shp_" + stable_hash("rp", key_id)
    pfx = "pfx_" + stable_hash("rp", key_id, n=16)
    t = enum_end + int(rng.uniform(30_000, 120_000))
    n = 0
    while t < end:
        mi, _ = g.mooncake_row(rng, "conversation")
        inp = int(min(mi, 60_000))
        out = int(np.clip(rng.lognormal(math.log(4000), 0.5), 800, 8192))
        cached = int(inp * rng.uniform(0.3, 0.8)) // 128 * 128 if inp > 2048 else 0
        write = max(0, inp - cached - 200) if rng.random() < 0.3 else 0
        g.request(rng, t, tenant, key, None, OPUS, inp, out, ip=ips[int(rng.integers(len(ips)))],
                  ua=uas[int(rng.integers(len(uas)))], tag="incident", errors=False, cancel_p=0.0,
                  cache=(cached, write), shape=shape, prefix=pfx)
        n += 1
        t += int(rng.gamma(0.5) / 0.5 / rate_per_s * 1000) + 1
    g.label("spend_spike", kind, start, end,
            {"tenant_id": tenant.tenant_id, "api_key_id": key_id, "source_ip": list(ips),
             "user_agent": list(uas), "abused_model": OPUS},
            f"{key_id} used from new IPs {', '.join(ips)} ({uas[0]}): {len(ENUM_MODELS) * 3} model-enumeration "
            f"calls ({n_refused} refused with 403/404) then {n} {OPUS} calls with 0.8k-8k outputs until "
            f"{fmt_ts(end)}; "
            f"off-hours for {tenant.tz}. {note}".strip(),
            also_expected=("quota_burn",))


def inc_low_and_slow(g: Gen, key_id: str, start: int, hours: float, factor: float = 4.0,
                     ip: str = "192.0.2.77") -> None:
    """A stolen key used quietly: ~factor x the key's average hourly spend, off-hours, one new IP."""
    rng = g.rng(f"inc/lowslow/{key_id}/{start}")
    tenant, key = key_of(g, key_id)
    weekly = g.key_spend.get(key_id, 1.0)
    span_h = (g.end - g.start) / HOUR
    target = factor * weekly / span_h * hours
    feature = key.features[0]
    model = key.models[0][0]
    spent = 0.0
    end = start + int(hours * HOUR)
    # pace: estimate cost/request from a few draws, then spread requests evenly with jitter
    probe = []
    for _ in range(50):
        ctx, gen = g.azure_pair(rng, "conv")
        probe.append(cost_usd(model, ctx + 1500, 0, 0, int(gen * 2.5)))
    n_req = max(10, int(target / max(1e-6, float(np.mean(probe)))))
    gap = (end - start) / n_req
    t = start
    shape = g.tenant_shapes(tenant.tenant_id, feature)[0]
    while t < end:
        ctx, gen = g.azure_pair(rng, "conv")
        r = g.request(rng, t, tenant, key, feature, model, ctx + 1500, int(gen * 2.5), ip=ip, ua=key.uas[0],
                      tag="incident", shape=shape, prefix=g.prefix_hash(tenant.tenant_id, feature),
                      user=None, resource=tenant.tenant_id if feature in RESOURCE_FEATURES else None)
        spent += r.cost
        t += int(gap * rng.uniform(0.4, 1.6))
    g.label("spend_spike", "low_and_slow", start, end,
            {"tenant_id": tenant.tenant_id, "api_key_id": key_id, "source_ip": ip, "model": model},
            f"{key_id} used from new IP {ip} (usual user agent) off-hours: ${spent:.2f} in {hours:g} h, about "
            f"{factor:g}x the key's average hourly spend (${weekly / span_h:.2f}/h)")


def inc_runaway(g: Gen, key_id: str, start: int, end: int, period_s: float = 30.0, kind: str = "runaway_loop",
                negative: bool = False, steps: int | None = None, ctx0: int = 6000,
                grow: tuple[int, int] = (350, 1300), detector_note: str = "") -> dict[str, Any]:
    """An agent session repeating one step template near-periodically with growing context.

    With `steps` set it is a bounded run (a hard negative: scheduled agent)."""
    rng = g.rng(f"inc/loop/{key_id}/{start}")
    tenant, key = key_of(g, key_id)
    model = key.models[0][0]
    feature = "agent"
    session = g.new_id("run")
    shape = "shp_" + stable_hash("loop-step", tenant.tenant_id, key_id, "plan-act-observe")
    prefix = g.prefix_hash(tenant.tenant_id, "agent", "scheduler" if negative else "v1")
    ctx = ctx0
    t = start
    n = 0
    cost = 0.0
    last = start
    prev = 0
    while t < end and (steps is None or n < steps):
        out = int(clip(rng.normal(180, 45), 40, 600))
        if prev == 0 or ctx < prev:  # first turn or just compacted: only system prompt + tools are warm
            cached = min(PREFIX_LEN["agent"], ctx) // 128 * 128 if n > 0 else 0
        else:
            cached = prev // 128 * 128
        write = max(0, ctx - cached - 50) if provider_of(model) == "anthropic" else 0
        r = g.request(rng, t, tenant, key, feature, model, ctx, out, session=session, shape=shape, prefix=prefix,
                      resource=tenant.tenant_id, session_turn=True, tag="negative" if negative else "incident",
                      cancel_p=0.0, cache=(cached, write), errors=False)
        cost += r.cost
        last = r.end
        n += 1
        prev = ctx
        ctx += out + int(rng.uniform(*grow))
        if ctx > 160_000:  # the framework compacts the history into a summary
            ctx = int(rng.uniform(18_000, 26_000))
        t += int(period_s * 1000 * rng.uniform(0.9, 1.1))
    return {"tenant": tenant, "key": key, "session": session, "shape": shape, "n": n, "cost": cost,
            "end": last, "model": model}


def inc_cross_read(g: Gen, key_id: str, victim: str, start: int, minutes: float, n: int = 30,
                   user: str | None = None, kind: str = "cross_tenant_read") -> None:
    rng = g.rng(f"inc/xread/{key_id}/{start}")
    tenant, key = key_of(g, key_id)
    user = user or f"u_{tenant.short}_0007"
    feature = "search"
    t = start
    end = start + int(minutes * MIN)
    gaps = [rng.uniform(0.2, 1.8) for _ in range(n)]
    gaps = [x / sum(gaps) * (end - start) * 0.98 for x in gaps]
    for gp in gaps:
        g.interaction(rng, tenant, feature, t, tag="incident", key=key, user=user, resource=victim)
        t += int(gp)
    g.label("cross_tenant", kind, start, end,
            {"tenant_id": tenant.tenant_id, "api_key_id": key_id, "user_id": user, "resource_tenant_id": victim},
            f"principal {user} of {tenant.tenant_id} (via {key_id}, feature {feature}) read {n} times from "
            f"{victim}'s index; {tenant.tenant_id} is not cross_tenant_allowed")


def neg_nightly_batch(g: Gen, key_id: str, local_hour: int, n: int, minutes: int) -> None:
    tenant, key = key_of(g, key_id)
    d = local_dt(tenant.tz, g.start).date()
    while True:
        start = local_to_utc(tenant.tz, d.year, d.month, d.day, local_hour, 0)
        d += timedelta(days=1)
        if start >= g.end:
            break
        if start < g.start:
            continue
        rng = g.rng(f"neg/batch/{key_id}/{start}")
        end = start + minutes * MIN
        ts = sorted(int(rng.uniform(start, end)) for _ in range(n))
        for t in ts:
            g.interaction(rng, tenant, "summarize", int(t), tag="bg", key=key, user=None)
        g.label("spend_spike", "negative:nightly_batch", start, end + 5 * MIN,
                {"tenant_id": tenant.tenant_id, "api_key_id": key_id},
                f"nightly batch: {n} summarize calls at {local_hour:02d}:00 {tenant.tz} every night from the batch "
                f"host {key.ips[0]}; recurring, not an incident")


def neg_long_conversation(g: Gen, key_id: str, start: int, turns: int = 70) -> None:
    rng = g.rng(f"neg/longconv/{key_id}/{start}")
    tenant, key = key_of(g, key_id)
    user = f"u_{tenant.short}_0003"
    before = len(g.events)
    end = g.interaction(rng, tenant, "chat", start, tag="bg", key=key, model=key.models[-1][0], turns=turns,
                        user=user)
    sess = next(ev["session_id"] for _, _, ev in g.events[before:] if "session_id" in ev)
    g.label("runaway_loop", "negative:long_human_conversation", start, end,
            {"tenant_id": tenant.tenant_id, "api_key_id": key_id, "session_id": sess, "user_id": user},
            f"one person's {turns}-turn chat over {(end - start) / HOUR:.1f} h: growing context but irregular "
            f"human-paced gaps (20 s-5 min), business hours, varying prompts")


def neg_scheduled_agent(g: Gen, key_id: str, every_h: int = 6, steps: int = 40, period_s: float = 25.0) -> None:
    """A cron-started agent (every `every_h` hours from 00:00 UTC): periodic, growing context, same
    prompt_shape, but bounded and of consistent cost; one label per run."""
    tenant, _ = key_of(g, key_id)
    start = g.start - g.start % DAY
    while start < g.end:
        if start >= g.start:
            r = inc_runaway(g, key_id, start, g.end, period_s=period_s, negative=True, steps=steps, ctx0=5000,
                            grow=(500, 700))
            g.label("runaway_loop", "negative:scheduled_agent_run", start, r["end"],
                    {"tenant_id": tenant.tenant_id, "api_key_id": key_id, "session_id": r["session"],
                     "prompt_shape": r["shape"]},
                    f"scheduled agent run (cron, every {every_h} h from 00:00 UTC): {r['n']} steps every "
                    f"~{period_s:g} s, ${r['cost']:.2f}, the same cost every run; ends by itself")
        start += every_h * HOUR


def neg_key_rotation(g: Gen, old_id: str, new_id: str, at: int) -> None:
    tenant, old = key_of(g, old_id)
    new = Key(new_id, old.features, old.models, old.ips, old.uas, old.cost_mode, old.extra, old.weight,
              active_from=at)
    old.active_until = at + 20 * MIN  # a few pods still use the old key for a while
    tenant.keys.append(new)
    g.label("spend_spike", "negative:key_rotation", at, at + 6 * HOUR,
            {"tenant_id": tenant.tenant_id, "api_key_id": new_id, "old_api_key_id": old_id},
            f"{old_id} rotated to {new_id}: the new key takes over the same IPs, user agent, models and "
            f"features; the old key stops after 20 min")


def neg_onboarding(g: Gen, tenant_id: str, at: int) -> None:
    tenant = g.tenants[tenant_id]
    tenant.onboard_at = at
    g.onboarded[tenant_id] = at
    g.label("spend_spike", "negative:new_tenant_onboarding", at, at + DAY,
            {"tenant_id": tenant_id, "api_key_id": [k.key_id for k in tenant.keys]},
            f"new tenant {tenant_id} starts sending traffic (ramping up over 3 h) with fresh keys; no history, "
            f"budget sized for it", also_expected=())


def neg_monday_ramp(g: Gen, tenant_id: str, day: date, factor: float = 2.2) -> None:
    tenant = g.tenants[tenant_id]
    a = local_to_utc(tenant.tz, day.year, day.month, day.day, 8, 0)
    b = local_to_utc(tenant.tz, day.year, day.month, day.day, 11, 0)
    tenant.rate_mods.append((a, b, factor))
    g.label("spend_spike", "negative:monday_morning_ramp", a, b,
            {"tenant_id": tenant_id},
            f"Monday 08:00-11:00 {tenant.tz}: {factor:g}x the usual weekday-morning volume, usual keys, IPs, "
            f"user agents and models")


def neg_support_reads(g: Gen, tenant_id: str = "t_support") -> None:
    tenant = g.tenants[tenant_id]
    others = sorted(t.tenant_id for t in g.tenants.values() if not t.cross_tenant_allowed)
    g.label("cross_tenant", "negative:support_tenant_reads", g.start, g.end,
            {"tenant_id": tenant_id, "resource_tenant_id": others},
            f"{tenant_id} is the internal support tenant (cross_tenant_allowed): its support_copilot and search "
            f"calls read the resources of the customer whose ticket is open")
    _ = tenant


def neg_cache_dip(g: Gen, tenant_id: str, feature: str, start: int, minutes: float = 7) -> None:
    g.windows.append(Window("cache_dip", tenant_id, start, start + int(minutes * MIN), feature))
    g.label("cache_collapse", "negative:brief_cache_dip", start, start + int(minutes * MIN),
            {"tenant_id": tenant_id, "feature": feature, "prefix_hash": g.prefix_hash(tenant_id, feature)},
            f"provider-side cache flush: {feature} cache hits drop to 0 for {minutes:g} min and recover by "
            f"themselves (same prefix)")


def inc_cache_churn(g: Gen, key_id: str, feature: str, start: int, end: int) -> None:
    tenant, key = key_of(g, key_id)
    g.windows.append(Window("cache_churn", tenant.tenant_id, start, end, feature, key_id))
    g.label("cache_collapse", "prefix_churn", start, end,
            {"tenant_id": tenant.tenant_id, "api_key_id": key_id, "feature": feature, "model": key.models[0][0],
             "prefix_hash_before": g.prefix_hash(tenant.tenant_id, feature)},
            f"a deploy put the current timestamp into {tenant.tenant_id}'s {feature} system prompt: prefix_hash "
            f"changes on every request, cached_input_tokens drop to 0 and Anthropic re-writes the cache each "
            f"call")


def inc_retry_storm(g: Gen, tenant_id: str, key_id: str, feature: str, start: int, end: int,
                    attempts: int = 9) -> None:
    g.windows.append(Window("retry_storm", tenant_id, start, end, feature, key_id, float(attempts)))
    g.label("retry_storm", "stacked_retries", start, end,
            {"tenant_id": tenant_id, "api_key_id": key_id, "feature": feature},
            f"upstream brownout: every {feature} request on {key_id} is tried {attempts} times (3 SDK retries x "
            f"3 gateway retries), same request_id, status 500/503/429; ~2/3 of the 5xx attempts were still "
            f"billed (upstream finished after the gateway timed out)")


def inc_cancel_tax(g: Gen, tenant_id: str, key_id: str, feature: str, start: int, end: int,
                   rate: float = 0.22) -> None:
    g.windows.append(Window("cancel_tax", tenant_id, start, end, feature, key_id, rate))
    g.label("cancellation_tax", "full_bill_after_cancel", start, end,
            {"tenant_id": tenant_id, "api_key_id": key_id, "feature": feature},
            f"frontend release where Stop closes the UI stream but not the upstream call: {rate:.0%} of {feature} "
            f"calls are cancelled and still bill their full output")


def inc_budget_burn(g: Gen, tenant_id: str, key_id: str, start: int, factor: float = 3.0) -> dict[str, Any]:
    """A new, expensive feature ('doc_review', Sonnet over long documents) triples the tenant's spend rate."""
    rng = g.rng(f"inc/budget/{tenant_id}/{start}")
    tenant, key = key_of(g, key_id)
    base = g.spend.get("bg", {}).get(tenant_id, 0.0)
    span_days = (g.end - g.start) / DAY
    base_per_day = base / span_days
    lam, shp = g.rate_series(tenant)
    for w in range(len(lam)):
        if g.start + w * WINDOW < start:
            lam[w] = 0
    # cost per doc_review call ~ Mooncake conversation-sized prompt on Sonnet
    probe = []
    for _ in range(200):
        mi, mo = g.mooncake_row(rng, "conversation")
        probe.append(cost_usd(SONNET, mi, int(mi * 0.3), 0, int(mo * 1.5)))
    per_call = float(np.mean(probe))
    n = int(factor * base_per_day * (g.end - start) / DAY / per_call)
    lam = lam / lam.sum() * n
    spent = 0.0
    model = SONNET
    shape = "shp_" + stable_hash("shape", tenant_id, "doc_review", 0)
    prefix = g.prefix_hash(tenant_id, "doc_review")
    for t in g.arrivals(rng, lam, shp):
        mi, mo = g.mooncake_row(rng, "conversation")
        r = g.request(rng, t, tenant, key, "doc_review", model, mi, int(mo * 1.5), shape=shape, prefix=prefix,
                      user=g.pick_user(rng, tenant), tag="incident")
        spent += r.cost
    return {"tenant": tenant, "key": key, "spent": spent, "base_per_day": base_per_day, "n": n}


# --------------------------------------------------------------------------------------------------
# Summaries, budgets, writing
# --------------------------------------------------------------------------------------------------


def tenant_table(g: Gen, budget_override: dict[str, float] | None = None) -> dict[str, Any]:
    """Tenants as generated, with expected spend and a suggested monthly budget (1.3x expected)."""
    days = (g.end - g.start) / DAY
    budget_override = budget_override or {}
    bg = g.spend.get("bg", {})
    neg = g.spend.get("negative", {})
    rows = []
    budgets = []
    for t in g.tenants.values():
        spend = bg.get(t.tenant_id, 0.0) + neg.get(t.tenant_id, 0.0)
        active_days = days
        if t.onboard_at is not None:
            active_days = max(0.5, (g.end - t.onboard_at) / DAY)
        monthly = spend / active_days * 30
        budget = budget_override.get(t.tenant_id, 1.3 * monthly)
        budget = float(f"{budget:.2g}") if budget < 100 else float(round(budget, -1))
        rows.append({
            "tenant_id": t.tenant_id,
            "timezone": t.tz,
            "cross_tenant_allowed": t.cross_tenant_allowed,
            "description": t.description,
            "servegen_client": t.client,
            "features": sorted(t.features),
            "keys": [{"api_key_id": k.key_id, "features": list(k.features), "models": [m for m, _ in k.models],
                      "source_ips": list(k.ips), "user_agents": list(k.uas), "reports_cost_usd": k.cost_mode,
                      "active_from": fmt_ts(k.active_from) if k.active_from else None,
                      "active_until": fmt_ts(k.active_until) if k.active_until else None,
                      "expected_weekly_spend_usd": round(g.key_spend.get(k.key_id, 0.0) * 7 / days, 2)}
                     for k in t.keys],
            "onboarded_at": fmt_ts(t.onboard_at) if t.onboard_at else None,
            "expected_weekly_spend_usd": round(spend / active_days * 7, 2),
            "expected_monthly_spend_usd": round(monthly, 2),
            "monthly_budget_usd": budget,
        })
        budgets.append({"name": f"{t.short}-monthly", "scope": "tenant", "id": t.tenant_id,
                        "limit_usd": budget, "period": "month"})
    return {"generated_by": "replay_data/generate.py", "seed": g.seed, "window": {
        "start": fmt_ts(g.start), "end": fmt_ts(g.end)}, "tenants": rows, "budgets": budgets}


def incident_scopes(labels: list[dict[str, Any]]) -> list[tuple[str, str, set[str], str | None]]:
    """(start, end, ids, field) of the positive labels, scoped by session, else api key, else tenant."""
    out = []
    for lab in labels:
        if lab["kind"].startswith("negative:"):
            continue
        ent = lab["entities"]
        for f in ("session_id", "api_key_id", "tenant_id"):
            if f in ent:
                v = ent[f]
                out.append((lab["start"], lab["end"], set(v) if isinstance(v, list) else {v}, f))
                break
    return out


def summarize(events: list[dict[str, Any]], labels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    n = len(events)
    scopes = incident_scopes(labels or [])
    bg_cached = bg_inp = 0
    tenants: dict[str, int] = {}
    keys = set()
    inp = []
    outp = []
    cached = inp_ok = 0
    retry = errors = cancelled = with_cost = 0
    feat: dict[str, list[int]] = {}
    requests: set[str] = set()
    retried: set[str] = set()
    spend: dict[str, float] = {}
    for e in events:
        tenants[e["tenant_id"]] = tenants.get(e["tenant_id"], 0) + 1
        keys.add(e["api_key_id"])
        rid = e.get("request_id") or e["event_id"]
        requests.add(rid)
        if e.get("attempt", 1) > 1:
            retry += 1
            retried.add(rid)
        if e.get("status", 200) >= 400:
            errors += 1
        if e.get("cancelled"):
            cancelled += 1
        if e.get("cost_usd") is not None:
            with_cost += 1
        if e.get("status", 200) == 200:
            inp.append(e["input_tokens"])
            outp.append(e["output_tokens"])
            cached += e.get("cached_input_tokens", 0)
            inp_ok += e["input_tokens"]
            f = feat.setdefault(e.get("feature") or "(none)", [0, 0])
            f[0] += e.get("cached_input_tokens", 0)
            f[1] += e["input_tokens"]
            ts = e["ts"]
            if not any(a <= ts <= b and e.get(fld) in ids for a, b, ids, fld in scopes):
                bg_cached += e.get("cached_input_tokens", 0)
                bg_inp += e["input_tokens"]
        spend[e["tenant_id"]] = spend.get(e["tenant_id"], 0.0) + cost_usd(
            e["model"], e["input_tokens"], e.get("cached_input_tokens", 0), e.get("cache_write_tokens", 0),
            e["output_tokens"])
    pi = np.percentile(inp, [50, 90, 99]) if inp else [0, 0, 0]
    po = np.percentile(outp, [50, 90, 99]) if outp else [0, 0, 0]
    return {
        "events": n,
        "tenants": len(tenants),
        "api_keys": len(keys),
        "per_tenant_share": {k: round(v / n, 4) for k, v in sorted(tenants.items(), key=lambda x: -x[1])},
        "per_tenant_spend_usd": {k: round(spend[k], 2) for k in sorted(spend, key=lambda x: -spend[x])},
        "total_spend_usd": round(sum(spend.values()), 2),
        "input_tokens_p50_p90_p99": [int(x) for x in pi],
        "output_tokens_p50_p90_p99": [int(x) for x in po],
        "cache_hit_ratio_token_weighted": round(cached / inp_ok, 4) if inp_ok else 0.0,
        "cache_hit_ratio_without_incidents": round(bg_cached / bg_inp, 4) if bg_inp else 0.0,
        "cache_hit_ratio_by_feature": {k: round(c / i, 4) if i else 0.0 for k, (c, i) in sorted(feat.items())},
        "logical_requests": len(requests),
        "requests_with_retries_share": round(len(retried) / max(1, len(requests)), 4),
        "retry_attempt_share": round(retry / n, 4),
        "error_status_share": round(errors / n, 4),
        "cancelled_share": round(cancelled / n, 4),
        "cost_usd_present_share": round(with_cost / n, 4),
    }


# --------------------------------------------------------------------------------------------------
# The sample week
# --------------------------------------------------------------------------------------------------


def build_sample(data: PublicData, seed: int = DEFAULT_SEED,
                 background_requests: int = SAMPLE_BACKGROUND_REQUESTS) -> Gen:
    start = parse_ts(SAMPLE_START)
    g = Gen(data, seed, "sample", SAMPLE_START, SAMPLE_DAYS, build_tenants(start), background_requests)
    NY, BER, TYO = "America/New_York", "Europe/Berlin", "Asia/Tokyo"

    # behaviour changes that must be in place before the background is drawn ---------------------
    neg_monday_ramp(g, "t_acme", date(2026, 11, 2), 2.2)
    neg_onboarding(g, "t_vandelay", local_to_utc(NY, 2026, 11, 4, 11, 0))
    neg_key_rotation(g, "key_globex_1", "key_globex_5", local_to_utc(BER, 2026, 11, 5, 10, 0))
    neg_cache_dip(g, "t_acme", "chat", local_to_utc(NY, 2026, 11, 3, 11, 0), 7)
    inc_cache_churn(g, "key_stark_1", "agent", parse_ts("2026-11-04T15:00:00Z"), g.end)
    inc_retry_storm(g, "t_acme", "key_acme_2", "search", local_to_utc(NY, 2026, 11, 5, 14, 0),
                    local_to_utc(NY, 2026, 11, 5, 15, 0))
    inc_cancel_tax(g, "t_globex", "key_globex_2", "chat", local_to_utc(BER, 2026, 11, 3, 10, 0),
                   local_to_utc(BER, 2026, 11, 3, 17, 0))

    g.background()

    # negatives drawn on top of the background -------------------------------------------------
    neg_nightly_batch(g, "key_initech_3", local_hour=1, n=380, minutes=60)
    neg_long_conversation(g, "key_acme_1", local_to_utc(NY, 2026, 11, 4, 13, 5), turns=70)
    neg_scheduled_agent(g, "key_stark_4", every_h=6, steps=40, period_s=25)
    neg_support_reads(g)

    # incidents ------------------------------------------------------------------------------------
    # (after the first 3 days, so the tenants have a baseline)
    inc_llmjacking(g, "key_initech_2", local_to_utc(NY, 2026, 11, 6, 2, 40), hours=3.5)
    inc_low_and_slow(g, "key_wonka_1", local_to_utc(BER, 2026, 11, 6, 22, 0), hours=6, factor=4.0)
    loop_start = local_to_utc(TYO, 2026, 11, 6, 19, 40)
    r = inc_runaway(g, "key_tyrell_3", loop_start, local_to_utc(TYO, 2026, 11, 9, 8, 50), period_s=30)
    g.label("runaway_loop", "weekend_runaway_loop", loop_start, r["end"],
            {"tenant_id": "t_tyrell", "api_key_id": "key_tyrell_3", "session_id": r["session"],
             "prompt_shape": r["shape"], "model": r["model"]},
            f"agent run {r['session']} stuck in a plan-act-observe loop from Friday 19:40 {TYO} until someone "
            f"kills it Monday 08:50: {r['n']} steps every ~30 s, same prompt_shape, context growing to 160k then "
            f"compacted, ${r['cost']:.0f} in total", also_expected=())
    inc_cross_read(g, "key_hooli_2", "t_wonka", parse_ts("2026-11-04T15:10:00Z"), 30, n=30)

    bb_start = local_to_utc(BER, 2026, 11, 4, 9, 0)
    bb = inc_budget_burn(g, "t_wayne", "key_wayne_2", bb_start, factor=3.0)
    budget = round(1.3 * bb["base_per_day"] * 30, -1) or 10.0
    daily_new = bb["base_per_day"] + bb["spent"] / ((g.end - bb_start) / DAY)
    days_to_exhaust = (budget - bb["base_per_day"] * (bb_start - g.start) / DAY) / daily_new + (
        bb_start - g.start) / DAY + 1  # + Nov 1, the month's first day
    g.label("quota_burn", "budget_burn", bb_start, g.end,
            {"tenant_id": "t_wayne", "budget": {"name": "wayne-monthly", "scope": "tenant", "id": "t_wayne",
                                                "limit_usd": budget, "period": "month"}},
            f"new 'doc_review' feature ({SONNET} over long documents, {bb['n']} calls) from Wednesday 09:00 "
            f"{BER}: spend rate ~{daily_new / max(bb['base_per_day'], 1e-9):.1f}x; at this rate the ${budget:g} "
            f"monthly budget runs out around Nov {int(days_to_exhaust)}", also_expected=())
    g.budget_override = {"t_wayne": budget}  # type: ignore[attr-defined]
    return g


# --------------------------------------------------------------------------------------------------
# Per-detector scenarios
# --------------------------------------------------------------------------------------------------

SCENARIO_BACKGROUND = 16_000


def pick_tenants(ids: Iterable[str], start_ms: int) -> list[Tenant]:
    by = {t.tenant_id: t for t in build_tenants(start_ms)}
    return [by[i] for i in ids]


def scenario_spend_spike(data: PublicData, seed: int) -> Gen:
    """5 days (Thu..Mon) rather than 1-3: spend_spike keeps a new tenant in a 3-day warm-up, so the
    incidents come on days 4-5, after the tenants have a baseline."""
    s = "2026-11-12T00:00:00Z"  # Thursday
    g = Gen(data, seed, "spend_spike", s, 5, pick_tenants(
        ["t_acme", "t_initech", "t_wonka", "t_globex", "t_vandelay"], parse_ts(s)), 20_000)
    NY, BER = "America/New_York", "Europe/Berlin"
    neg_monday_ramp(g, "t_acme", date(2026, 11, 16), 2.5)
    neg_onboarding(g, "t_vandelay", local_to_utc(NY, 2026, 11, 16, 10, 0))
    neg_key_rotation(g, "key_globex_2", "key_globex_6", local_to_utc(BER, 2026, 11, 16, 14, 0))
    g.background()
    neg_nightly_batch(g, "key_initech_3", local_hour=1, n=250, minutes=45)
    inc_llmjacking(g, "key_initech_2", local_to_utc(NY, 2026, 11, 15, 3, 10), hours=2.5, rate_per_s=0.12)
    inc_low_and_slow(g, "key_wonka_1", local_to_utc(BER, 2026, 11, 15, 23, 0), hours=5, factor=4.5)
    # a dormant key (the CI key, barely used) suddenly hammered from a new address on Monday evening
    inc_llmjacking(g, "key_globex_4", local_to_utc(BER, 2026, 11, 16, 21, 30), hours=1.5, rate_per_s=0.08,
                   ips=("203.0.113.200",), uas=("aiohttp/3.10.5",), kind="llmjacking_dormant_key",
                   note="The key normally makes a few CI calls a day.")
    return g


def scenario_quota_burn(data: PublicData, seed: int) -> Gen:
    s = "2026-11-17T00:00:00Z"  # Tuesday
    g = Gen(data, seed, "quota_burn", s, 2, pick_tenants(
        ["t_wayne", "t_acme", "t_hooli", "t_cyberdyne"], parse_ts(s)), SCENARIO_BACKGROUND)
    BER, NY = "Europe/Berlin", "America/New_York"
    g.background()
    # 1) tenant $ budget burn
    bb_start = local_to_utc(BER, 2026, 11, 17, 9, 0)
    bb = inc_budget_burn(g, "t_wayne", "key_wayne_2", bb_start, factor=4.0)
    budget = round(1.3 * bb["base_per_day"] * 30, -1) or 10.0
    ratio = 1 + bb["spent"] / max(1e-9, bb["base_per_day"] * (g.end - bb_start) / DAY)
    g.label("quota_burn", "budget_burn", bb_start, g.end,
            {"tenant_id": "t_wayne", "budget": {"name": "wayne-monthly", "scope": "tenant", "id": "t_wayne",
                                                "limit_usd": budget, "period": "month"}},
            f"new doc_review feature multiplies t_wayne's spend rate by ~{ratio:.1f}: "
            f"the ${budget:g} monthly budget would be exhausted long before month end")
    # 2) api-key daily token budget burn: a backfill job on key_hooli_3 re-summarises the archive
    tenant, key = key_of(g, "key_hooli_3")
    rng = g.rng("inc/backfill")
    a = parse_ts("2026-11-18T06:00:00Z")
    b = parse_ts("2026-11-18T13:00:00Z")
    normal_tokens = sum(e["input_tokens"] + e["output_tokens"] for _, _, e in g.events
                        if e["api_key_id"] == "key_hooli_3") / ((g.end - g.start) / DAY)  # per day
    limit_tokens = int(float(f"{normal_tokens * 1.5:.2g}"))
    # the backfill alone pushes ~6x a normal day's tokens through the key in 7 hours
    sizes = [g.servegen_pair(rng, tenant, a) for _ in range(200)]
    per_req = sum(max(i, 2000) * 3 + o for i, o in sizes) / len(sizes)
    gap = (b - a) / max(20, 6 * normal_tokens / per_req)
    t = a
    used = 0
    while t < b:
        inp, out = g.servegen_pair(rng, tenant, t)
        g.request(rng, t, tenant, key, "summarize", GPT4O_MINI, max(inp, 2000) * 3, out, tag="incident",
                  shape=g.tenant_shapes("t_hooli", "summarize")[0], prefix=g.prefix_hash("t_hooli", "summarize"))
        used += max(inp, 2000) * 3 + out
        t += int(gap * rng.uniform(0.5, 1.5))
    g.label("quota_burn", "token_budget_burn", a, b,
            {"tenant_id": "t_hooli", "api_key_id": "key_hooli_3",
             "budget": {"name": "hooli-summarize-daily-tokens", "scope": "api_key", "id": "key_hooli_3",
                        "limit_tokens": limit_tokens, "period": "day"}},
            f"archive backfill on key_hooli_3 from 06:00 UTC: ~{used / 1e6:.1f}M tokens in 7 h against a daily "
            f"budget of {limit_tokens / 1e6:.2f}M tokens (1.5x the key's normal day)")
    # negatives: a short burst well inside the month's budget, and ETL's normal night peak
    tacme = g.tenants["t_acme"]
    na = local_to_utc(NY, 2026, 11, 17, 15, 0)
    rng = g.rng("neg/burst")
    for t in sorted(int(rng.uniform(na, na + 30 * MIN)) for _ in range(260)):
        g.interaction(rng, tacme, "search", int(t), tag="bg")
    g.label("quota_burn", "negative:short_burst_within_budget", na, na + 30 * MIN,
            {"tenant_id": "t_acme"},
            "a 30-minute 3x burst of search (marketing demo); fast but short, the monthly budget is not at risk")
    g.label("quota_burn", "negative:nightly_etl_peak", parse_ts("2026-11-17T00:00:00Z"),
            parse_ts("2026-11-17T05:00:00Z"), {"tenant_id": "t_cyberdyne"},
            "t_cyberdyne's normal nightly ETL peak (00-05 UTC); its budget is sized for it")
    g.budget_override = {"t_wayne": budget}  # type: ignore[attr-defined]
    g.key_budgets = [{"name": "hooli-summarize-daily-tokens", "scope": "api_key",  # type: ignore[attr-defined]
                      "id": "key_hooli_3", "limit_tokens": limit_tokens, "period": "day"}]
    return g


def scenario_runaway_loop(data: PublicData, seed: int) -> Gen:
    s = "2026-11-13T00:00:00Z"  # Friday
    g = Gen(data, seed, "runaway_loop", s, 3, pick_tenants(["t_tyrell", "t_stark", "t_acme"], parse_ts(s)),
            12_000)
    TYO, NY = "Asia/Tokyo", "America/New_York"
    g.background()
    # 1) weekend loop (Friday evening Tokyo .. end of stream)
    a = local_to_utc(TYO, 2026, 11, 13, 19, 40)
    r = inc_runaway(g, "key_tyrell_3", a, g.end - 10 * MIN, period_s=30)
    g.label("runaway_loop", "weekend_runaway_loop", a, r["end"],
            {"tenant_id": "t_tyrell", "api_key_id": "key_tyrell_3", "session_id": r["session"],
             "prompt_shape": r["shape"]},
            f"Friday-evening agent loop: {r['n']} steps every ~30 s over the weekend, ${r['cost']:.0f}")
    # 2) a fast overnight loop on a different key (stuck tool retry), stopped by a step limit after 4 h
    a = parse_ts("2026-11-13T01:00:00Z")
    r = inc_runaway(g, "key_stark_1", a, a + 4 * HOUR, period_s=20, grow=(200, 600))
    g.label("runaway_loop", "overnight_runaway_loop", a, r["end"],
            {"tenant_id": "t_stark", "api_key_id": "key_stark_1", "session_id": r["session"],
             "prompt_shape": r["shape"]},
            f"agent stuck re-calling a failing tool: {r['n']} steps every ~20 s for 4 h at night, ${r['cost']:.0f}")
    # 3) a Saturday loop at a US tenant
    a = local_to_utc(NY, 2026, 11, 14, 12, 0)
    r = inc_runaway(g, "key_acme_4", a, a + 6 * HOUR, period_s=38, grow=(600, 1600))
    g.label("runaway_loop", "weekend_runaway_loop", a, r["end"],
            {"tenant_id": "t_acme", "api_key_id": "key_acme_4", "session_id": r["session"],
             "prompt_shape": r["shape"]},
            f"Saturday agent loop: {r['n']} steps every ~38 s for 6 h, ${r['cost']:.0f}")
    neg_long_conversation(g, "key_acme_1", local_to_utc(NY, 2026, 11, 13, 13, 5), turns=70)
    neg_scheduled_agent(g, "key_stark_4", every_h=6, steps=40, period_s=25)
    return g


def scenario_cache_collapse(data: PublicData, seed: int) -> Gen:
    s = "2026-11-17T00:00:00Z"
    g = Gen(data, seed, "cache_collapse", s, 2, pick_tenants(
        ["t_stark", "t_globex", "t_umbrella", "t_hooli"], parse_ts(s)), SCENARIO_BACKGROUND)
    BER, TYO = "Europe/Berlin", "Asia/Tokyo"
    # 1) prefix churn
    inc_cache_churn(g, "key_stark_1", "agent", parse_ts("2026-11-17T15:00:00Z"), g.end)
    # 2) model version change: t_globex runs everything Anthropic on Claude 3.7 Sonnet, then migrates to
    #    Sonnet 4 (same family) with a new SDK build that sends no cache_control -> reads and writes stop
    a = local_to_utc(BER, 2026, 11, 18, 10, 0)
    tg = g.tenants["t_globex"]
    for kg in list(tg.keys):
        if not any(provider_of(m) == "anthropic" for m, _ in kg.models):
            continue
        old_models = tuple((SONNET37 if provider_of(m) == "anthropic" else m, w) for m, w in kg.models)
        new_models = tuple((SONNET if provider_of(m) == "anthropic" else m, w) for m, w in kg.models)
        kg.models = old_models
        kg.active_until = a
        tg.keys.append(Key(kg.key_id, kg.features, new_models, kg.ips, kg.uas, kg.cost_mode, kg.extra,
                           kg.weight, active_from=a))
    g.windows.append(Window("cache_off", "t_globex", a, g.end, model=SONNET))
    g.label("cache_collapse", "model_version_change", a, g.end,
            {"tenant_id": "t_globex", "model": SONNET, "model_before": SONNET37},
            f"t_globex moves every Anthropic call from {SONNET37} to {SONNET} (same family) with a new SDK build "
            f"that sends no cache_control: cached and cache-write tokens drop to 0 and stay there")
    # negatives
    neg_cache_dip(g, "t_umbrella", "chat", local_to_utc(TYO, 2026, 11, 17, 21, 0), 8)
    neg_cache_dip(g, "t_globex", "code_assist", local_to_utc(BER, 2026, 11, 17, 11, 0), 6)
    g.label("cache_collapse", "negative:low_traffic_night", parse_ts("2026-11-17T18:00:00Z"),
            parse_ts("2026-11-18T05:00:00Z"), {"tenant_id": "t_globex", "feature": "code_assist"},
            "t_globex code_assist at night in Berlin: few calls, hit ratio noisy but not collapsed")
    g.background()
    return g


def scenario_cross_tenant(data: PublicData, seed: int) -> Gen:
    s = "2026-11-18T00:00:00Z"
    g = Gen(data, seed, "cross_tenant", s, 2, pick_tenants(
        ["t_hooli", "t_wonka", "t_acme", "t_support", "t_cyberdyne"], parse_ts(s)), SCENARIO_BACKGROUND)
    g.background()
    inc_cross_read(g, "key_hooli_2", "t_wonka", parse_ts("2026-11-18T15:10:00Z"), 30, n=30)
    # fan-out: one principal of t_acme enumerates many tenants' indexes in 20 minutes
    rng = g.rng("inc/fanout")
    tenant, key = key_of(g, "key_acme_2")
    user = "u_acme_0311"
    a = parse_ts("2026-11-19T02:20:00Z")
    victims = ["t_hooli", "t_wonka", "t_cyberdyne", "t_globex", "t_initech", "t_stark"]
    t = a
    for i in range(56):
        g.interaction(rng, tenant, "search", t, tag="incident", key=key, user=user,
                      resource=victims[i % len(victims)])
        t += int(rng.uniform(8_000, 35_000))
    g.label("cross_tenant", "fan_out", a, t,
            {"tenant_id": "t_acme", "api_key_id": "key_acme_2", "user_id": user, "resource_tenant_id": victims},
            f"principal {user} of t_acme reads from {len(victims)} other tenants' resources in ~{(t - a) / MIN:.0f} "
            f"min (IDOR in the retrieval tool's tenant parameter)")
    # private prompt shape of t_wonka showing up in t_hooli's traffic (template + key material copied)
    rng = g.rng("inc/shape")
    th, kh = key_of(g, "key_hooli_1")
    stolen = g.tenant_shapes("t_wonka", "chat")[0]
    a = parse_ts("2026-11-19T09:00:00Z")
    t = a
    for _ in range(25):
        ctx, gen = g.azure_pair(rng, "conv")
        g.request(rng, t, th, kh, "chat", FLASH, ctx, gen, shape=stolen, prefix=g.prefix_hash("t_wonka", "chat"),
                  user="u_hooli_0042", tag="incident")
        t += int(rng.uniform(20_000, 160_000))
    g.label("cross_tenant", "private_shape_elsewhere", a, t,
            {"tenant_id": "t_hooli", "api_key_id": "key_hooli_1", "prompt_shape": stolen,
             "owner_tenant_id": "t_wonka"},
            "t_wonka's private chat prompt template (prompt_shape and prefix) appears in t_hooli's traffic")
    neg_support_reads(g)
    g.label("cross_tenant", "negative:shared_generic_shape", g.start, g.end,
            {"prompt_shape": [GENERIC_SHAPES["summarize"], GENERIC_SHAPES["search"], GENERIC_SHAPES["chat"]]},
            "stock LangChain-style templates used by several tenants; a shape shared from the start is not a leak")
    return g


def scenario_retry_storm(data: PublicData, seed: int) -> Gen:
    s = "2026-11-19T00:00:00Z"
    g = Gen(data, seed, "retry_storm", s, 2, pick_tenants(["t_acme", "t_globex", "t_cyberdyne"], parse_ts(s)),
            SCENARIO_BACKGROUND)
    NY, BER = "America/New_York", "Europe/Berlin"
    inc_retry_storm(g, "t_acme", "key_acme_2", "search", local_to_utc(NY, 2026, 11, 19, 14, 0),
                    local_to_utc(NY, 2026, 11, 19, 15, 0))
    inc_retry_storm(g, "t_globex", "key_globex_3", "agent", local_to_utc(BER, 2026, 11, 20, 11, 0),
                    local_to_utc(BER, 2026, 11, 20, 11, 40), attempts=8)
    g.labels[-1]["description"] = g.labels[-1]["description"].replace("3 SDK retries x 3 gateway retries",
                                                                      "2 SDK x 4 gateway attempts")
    # negative: provider-wide 429 blip: every request gets one quick retry for 5 minutes
    a = parse_ts("2026-11-19T15:00:00Z")
    for tid in g.tenants:
        g.windows.append(Window("retry_blip", tid, a, a + 5 * MIN))
    g.label("retry_storm", "negative:brief_rate_limit_blip", a, a + 5 * MIN, {"tenant_id": sorted(g.tenants)},
            "5-minute provider rate-limit blip: every request of every tenant is retried once after a 429 and "
            "then succeeds; normal backoff, no stacking")
    g.label("retry_storm", "negative:background_retries", g.start, g.end, {"tenant_id": "t_cyberdyne"},
            "ordinary 1-2% of requests with 1-3 retries (429/5xx) spread over the day")
    g.background()
    return g


def scenario_cancellation_tax(data: PublicData, seed: int) -> Gen:
    s = "2026-11-24T00:00:00Z"
    g = Gen(data, seed, "cancellation_tax", s, 2, pick_tenants(["t_globex", "t_umbrella", "t_acme"], parse_ts(s)),
            SCENARIO_BACKGROUND)
    BER, TYO, NY = "Europe/Berlin", "Asia/Tokyo", "America/New_York"
    inc_cancel_tax(g, "t_globex", "key_globex_2", "chat", local_to_utc(BER, 2026, 11, 24, 10, 0),
                   local_to_utc(BER, 2026, 11, 24, 17, 0))
    inc_cancel_tax(g, "t_umbrella", "key_umbrella_1", "chat", local_to_utc(TYO, 2026, 11, 25, 18, 0),
                   local_to_utc(TYO, 2026, 11, 25, 23, 30), rate=0.3)
    g.labels[-1]["kind"] = "full_bill_after_cancel"
    g.labels[-1]["description"] = ("streaming proxy does not propagate client disconnects: 30% of chat calls are "
                                   "cancelled but the upstream runs to completion and bills the full output")
    # negative: a burst of ordinary cancels (users pressing stop during a slow period) with partial outputs
    a = local_to_utc(NY, 2026, 11, 24, 13, 0)
    g.windows.append(Window("cancel_spike", "t_acme", a, a + 40 * MIN, "chat"))
    g.label("cancellation_tax", "negative:cancel_spike_partial_output", a, a + 40 * MIN,
            {"tenant_id": "t_acme", "feature": "chat"},
            "slow responses make many users press Stop for 40 min; outputs are cut and billed partially")
    g.label("cancellation_tax", "negative:normal_cancels", g.start, g.end, {"tenant_id": "t_acme"},
            "the usual ~1% of streamed calls cancelled with partial outputs")
    g.background()
    return g


SCENARIOS: dict[str, Callable[[PublicData, int], Gen]] = {
    "spend_spike": scenario_spend_spike,
    "quota_burn": scenario_quota_burn,
    "runaway_loop": scenario_runaway_loop,
    "cache_collapse": scenario_cache_collapse,
    "cross_tenant": scenario_cross_tenant,
    "retry_storm": scenario_retry_storm,
    "cancellation_tax": scenario_cancellation_tax,
}


def build_scenario(name: str, data: PublicData, seed: int = DEFAULT_SEED, scale: float = 1.0) -> Gen:
    """Build one per-detector scenario; `scale` < 1 thins the background traffic (quick tests)."""
    Gen.background_scale = scale
    try:
        return SCENARIOS[name](data, seed)
    finally:
        Gen.background_scale = 1.0


def render(g: Gen) -> tuple[bytes, bytes, bytes]:
    """(jsonl.gz bytes, labels json bytes, tenants json bytes) of a built generator, in memory."""
    events = g.finish()
    buf = io.BytesIO()
    enc = json.JSONEncoder(separators=(",", ":")).encode
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for i in range(0, len(events), 5000):
            gz.write(("\n".join(enc(e) for e in events[i:i + 5000]) + "\n").encode())
    table = tenant_table(g, getattr(g, "budget_override", None))
    if getattr(g, "key_budgets", None):
        table["budgets"].extend(g.key_budgets)  # type: ignore[attr-defined]
    g.summary = summarize(events, g.labels)  # type: ignore[attr-defined]
    return (buf.getvalue(), (json.dumps(g.labels, indent=2) + "\n").encode(),
            (json.dumps(table, indent=2) + "\n").encode())


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _job(task: str, data_dir: str, seed: int) -> tuple[str, bytes, bytes, bytes, dict[str, Any], float]:
    """Build one stream ('sample' or a scenario name) in memory; runs in a worker process."""
    t = time.process_time()
    data = _shared_data(Path(data_dir))
    g = build_sample(data, seed) if task == "sample" else build_scenario(task, data, seed)
    ev, lab, ten = render(g)
    s = dict(g.summary)  # type: ignore[attr-defined]
    s["gz_bytes"] = len(ev)
    s["labels"] = len(g.labels)
    return task, ev, lab, ten, s, time.process_time() - t


_DATA: dict[Path, PublicData] = {}


def _shared_data(data_dir: Path) -> PublicData:
    if data_dir not in _DATA:
        _DATA[data_dir] = PublicData(data_dir)
    return _DATA[data_dir]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="sample", choices=["sample", "scenarios", "all"])
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--only", default="", help="comma-separated scenario names (scenarios command)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes (output does not depend on it)")
    args = ap.parse_args(argv)
    _shared_data(args.data_dir)  # fail early if the traces are missing
    t0 = time.time()
    tasks = []
    if args.command in ("sample", "all"):
        tasks.append("sample")
    if args.command in ("scenarios", "all"):
        names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
        unknown = sorted(set(names) - set(SCENARIOS))
        if unknown:
            ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        tasks.extend(names)
    if args.jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(_job, tasks, [str(args.data_dir)] * len(tasks), [args.seed] * len(tasks)))
    else:
        results = [_job(t, str(args.data_dir), args.seed) for t in tasks]
    for task, ev, lab, ten, s, cpu in results:  # written in a fixed order, whatever finished first
        if task == "sample":
            out, stem = args.out_dir, "sample"
        else:
            out, stem = args.out_dir / "scenarios", task
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.jsonl.gz").write_bytes(ev)
        (out / f"{stem}.labels.json").write_bytes(lab)
        (out / f"{stem}.tenants.json").write_bytes(ten)
        if task == "sample":
            print(f"sample: {out / 'sample.jsonl.gz'} ({cpu:.1f}s cpu)")
            print(json.dumps(s, indent=2))
        else:
            print(f"scenario {task}: {s['events']} events, {len(ev) / 1e6:.2f} MB gz, {s['labels']} labels, "
                  f"cache hit {s['cache_hit_ratio_token_weighted']:.2f}, retry share {s['retry_attempt_share']:.3f} "
                  f"({cpu:.1f}s cpu)")
    print(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Price table: dollars per million tokens, and the cost of one event.

Gateways often leave ``cost_usd`` empty; sentinel then prices the event from
``rules/prices.yaml``. Billed model names carry versions and routing prefixes
that the table does not list one by one, so a name is matched in this order
(first hit wins, and the result is cached per distinct name):

1. the exact name (``gpt-4o-2024-08-06`` if the table lists it);
2. the name lower-cased, without a routing prefix (``openai/``, ``bedrock/``,
   anything up to the last ``/``) and without a Bedrock region or vendor prefix
   (``us.``, ``eu.``, ``apac.``, ``global.``; ``anthropic.``, ``meta.``, ``amazon.``,
   ``mistral.``, ``cohere.``, ``ai21.``);
3. that name with version suffixes removed, repeatedly: ``-v1:0`` / ``-v2``,
   a date (``-2024-08-06``, ``-20250514``, ``@20240229``), ``-latest``, and a
   three- or four-digit revision (``-0613``, ``-002``);
4. the longest table entry that is a prefix of it ending at a ``-`` or ``.``
   boundary (``gpt-4o-mini-audio`` -> ``gpt-4o-mini``);
5. otherwise the ``fallback`` price, and the name is counted in
   :attr:`PriceTable.unknown_models` so the operator can add it.

Input tokens include cached ones (contract), so the uncached part is
``input - cached_input - cache_write``, priced at the input rate.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Final

_ROUTE_PREFIX_RE: Final = re.compile(
    r"^(?:(?:us|eu|apac|global|jp|au)\.)?(?:anthropic|meta|amazon|mistral|cohere|ai21)\."
)
_VERSION_SUFFIX_RES: Final = (
    re.compile(r"-v\d+(?::\d+)?$"),
    re.compile(r"[-@]\d{4}-\d{2}-\d{2}$"),
    re.compile(r"[-@]\d{8}$"),
    re.compile(r"-latest$"),
    re.compile(r"-\d{3,4}$"),
)
_CACHE_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Dollars per million tokens for one model, and its family and cost tier.

    ``tier`` ranks models by output price across the table: 0 is the most
    expensive model, so ``tier == 0`` marks "the most expensive model" for the
    spend_spike detector.
    """

    name: str
    family: str
    input: float
    output: float
    cached_input: float
    cache_write: float
    tier: int = 0
    known: bool = True

    def cost(self, input_tokens: int, output_tokens: int, cached: int, cache_write: int) -> float:
        uncached = input_tokens - cached - cache_write
        if uncached < 0:
            uncached = 0
        return (
            uncached * self.input + cached * self.cached_input + cache_write * self.cache_write
            + output_tokens * self.output
        ) / 1_000_000.0


def normalize_model(name: str) -> str:
    """Lower-case, routing prefixes and version suffixes stripped.

    >>> normalize_model("bedrock/us.anthropic.claude-3-5-sonnet-20240620-v1:0")
    'claude-3-5-sonnet'
    >>> normalize_model("openai/gpt-4o-2024-08-06")
    'gpt-4o'
    """
    n = name.strip().lower()
    if "/" in n:
        n = n.rsplit("/", 1)[1]
    n = _ROUTE_PREFIX_RE.sub("", n)
    changed = True
    while changed:
        changed = False
        for rx in _VERSION_SUFFIX_RES:
            m = rx.search(n)
            if m and m.start() > 0:
                n = n[: m.start()]
                changed = True
    return n


class PriceTable:
    """Resolves billed model names to prices (see the module doc for the order).

    >>> table = PriceTable({"gpt-4o": ModelPrice("gpt-4o", "gpt-4o", 2.5, 10.0, 1.25, 2.5)},
    ...                    fallback=ModelPrice("fallback", "unknown", 3.0, 15.0, 0.3, 3.75))
    >>> table.resolve("gpt-4o-2024-08-06").name, table.resolve("mystery-1").known
    ('gpt-4o', False)
    >>> round(table.resolve("gpt-4o").cost(1000, 100, 500, 0), 6)
    0.002875
    """

    __slots__ = ("_by_name", "_cache", "_keys_by_len", "fallback", "unknown_models")

    def __init__(self, models: dict[str, ModelPrice], fallback: ModelPrice) -> None:
        ranked = sorted({p.output for p in models.values()}, reverse=True)
        tier_of = {price: i for i, price in enumerate(ranked)}
        self._by_name = {
            name.lower(): ModelPrice(
                p.name, p.family, p.input, p.output, p.cached_input, p.cache_write, tier_of[p.output]
            )
            for name, p in models.items()
        }
        self._keys_by_len = sorted(self._by_name, key=len, reverse=True)
        self.fallback = ModelPrice(
            fallback.name, fallback.family, fallback.input, fallback.output, fallback.cached_input,
            fallback.cache_write, len(ranked), known=False,
        )
        self._cache: dict[str, ModelPrice] = {}
        self.unknown_models: Counter[str] = Counter()

    def resolve(self, model: str) -> ModelPrice:
        hit = self._cache.get(model)
        if hit is not None:
            if not hit.known:
                self.unknown_models[model] += 1
            return hit
        price = self._lookup(model)
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[model] = price
        if not price.known:
            if len(self.unknown_models) < _CACHE_LIMIT or model in self.unknown_models:
                self.unknown_models[model] += 1
            else:
                self.unknown_models["(other)"] += 1
        return price

    def _lookup(self, model: str) -> ModelPrice:
        by_name = self._by_name
        exact = by_name.get(model.lower())
        if exact is not None:
            return exact
        base = normalize_model(model)
        hit = by_name.get(base)
        if hit is not None:
            return hit
        for key in self._keys_by_len:
            if base.startswith(key) and len(base) > len(key) and base[len(key)] in "-.":
                return by_name[key]
        return ModelPrice(
            model, normalize_model(model), self.fallback.input, self.fallback.output,
            self.fallback.cached_input, self.fallback.cache_write, self.fallback.tier, known=False,
        )

    def family(self, model: str) -> str:
        return self.resolve(model).family

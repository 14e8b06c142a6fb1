"""NAB benchmark: the generic seasonal spike scorer on the Numenta Anomaly Benchmark, next to the scoreboard.

    python bench/nab.py [--data ../shared/data/nab] [--only nyc_taxi,...] [--workers N] [--json FILE]

Scores :class:`detectors.seasonal.SeasonalScorer` (configuration:
:class:`sentinel.tuning.nab.SeasonalConfig`) on every NAB series with the
standard NAB scoring implemented in :mod:`sentinel.tuning.nab`, for the three
profiles, in two variants:

* ``raw``: the scorer's score at every point;
* ``1h suppression``: a point counts only when its score beats every score
  of the previous hour -- what an open incident does with repeated findings
  in the daemon (the incident book resolves after 1 h of quiet by default).

and prints them ranked among the published scores (``results/final_results.json``
of the NAB repository, copied into the data folder). ``--markdown`` prints the
table in the form used in the README. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sentinel.progress import Progress  # noqa: E402
from sentinel.tuning.nab import (  # noqa: E402
    PROFILES,
    SeasonalConfig,
    load_corpus,
    load_profiles,
    published_scores,
    run_nab,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "nab"

# Display names of the published entries (results/final_results.json keys), as the NAB README names them.
NAMES = {
    "ARTime": "ARTime", "numenta": "Numenta HTM (NuPIC v0.5.6)", "contextOSE": "CAD OSE",
    "earthgeckoSkyline": "earthgecko Skyline", "knncad": "KNN CAD", "relativeEntropy": "Relative Entropy",
    "randomCutForest": "Random Cut Forest", "twitterADVec": "Twitter ADVec v1.0.0",
    "windowedGaussian": "Windowed Gaussian", "skyline": "Etsy Skyline", "htmjava": "HTM Java",
    "numentaTM": "NumentaTM HTM", "expose": "EXPoSE", "random": "Random (one seed)", "null": "Null",
}

VARIANTS = {
    "raw": SeasonalConfig(),
    "1h suppression": SeasonalConfig(suppress_s=3600.0),
}


def _tick(bar: Progress, _series: object) -> None:
    bar.update(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB folder (data/, labels/, config/, results/)")
    ap.add_argument("--only", default="", help="comma-separated series (file stems or category/file.csv)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", type=Path, help="write the scores as JSON")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if not (args.data / "labels" / "combined_windows.json").is_file():
        print(f"bench/nab.py: no NAB data at {args.data}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    corpus = load_corpus(args.data, [s for s in args.only.split(",") if s])
    profiles = load_profiles(args.data)
    ours: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, dict[str, float]]] = {}
    for name, cfg in VARIANTS.items():
        progress = Progress(f"NAB {name}", total=len(corpus), unit="series", enabled=not args.no_progress)
        res = run_nab(corpus, profiles, cfg, workers=args.workers, on_series=partial(_tick, progress))
        progress.close()
        ours[name] = {p: r.normalized for p, r in res.profiles.items()}
        details[name] = {p: {"normalized": r.normalized, "raw": r.raw, "threshold": r.threshold, "tp": r.tp,
                             "fp": r.fp, "fn": r.fn} for p, r in res.profiles.items()}
    seconds = time.perf_counter() - t0
    published = published_scores(args.data) if not args.only else {}
    rows: list[tuple[str, dict[str, float], bool]] = [
        (f"**sentinel SeasonalScorer, {name}**", s, True) for name, s in ours.items()]
    rows += [(NAMES.get(k, k), v, False) for k, v in published.items()]
    rows.append(("Perfect", dict.fromkeys(PROFILES, 100.0), False))
    rows.sort(key=lambda r: -r[1].get("standard", 0.0))
    print(f"NAB: {len(corpus)} series, {sum(len(s) for s in corpus):,} points, "
          f"{sum(len(s.windows) for s in corpus)} windows; {seconds:.0f}s", file=sys.stderr)
    if args.markdown:
        print("| Detector | Standard | Reward low FP | Reward low FN |")
        print("| --- | ---: | ---: | ---: |")
        for name, s, _mine in rows:
            print(f"| {name} | " + " | ".join(f"{s.get(p, float('nan')):.1f}" for p in PROFILES) + " |")
    else:
        w = max(len(r[0]) for r in rows)
        print(f"{'detector':<{w}}  {'standard':>9}  {'low FP':>9}  {'low FN':>9}")
        for name, s, mine in rows:
            mark = " <-" if mine else ""
            print(f"{name:<{w}}  " + "  ".join(f"{s.get(p, float('nan')):9.1f}" for p in PROFILES) + mark)
        for name, per in details.items():
            for p, d in per.items():
                z = d["threshold"] * VARIANTS[name].z_scale
                print(f"  {name:<15} {p:<19} threshold {d['threshold']:.4f} (z {z:.1f})  "
                      f"TP {d['tp']:.0f}  FP {d['fp']:.0f}  FN {d['fn']:.0f}  raw {d['raw']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"series": len(corpus), "seconds": round(seconds, 1), "ours": details,
                                         "published": published}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

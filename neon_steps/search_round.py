"""Stage `search_round` (rule search_round): one round of a (w, γ) search for one (model, |S|, B).

Reads every FID evaluated so far (the previous round's points and the ones it asked for), the
base's FID at the noise seeds, replays the search (neon_steps/search.py) and writes which points
to evaluate next, or that the search is done and which point it chose. The last allowed round
(search.max_rounds) is always done: the DAG stays finite."""

import statistics
import sys
from typing import Any, Mapping, Sequence

from neon_steps import search
from neon_steps.io import read_json, write_json


def read_all(files: Sequence[str]) -> list[dict]:
    return [read_json(f) for f in files]


def fid_noise(base_results: Sequence[dict], noise_results: Sequence[dict]) -> float:
    """The FID's standard deviation between draws of the base at the search's sample count: the
    base at the main seed and at the noise seeds, per γ, averaged over γ; 0 without noise seeds."""
    by_gamma: dict[float, dict[int, float]] = {}
    for result in [*base_results, *noise_results]:
        by_gamma.setdefault(float(result["gamma"]), {})[int(result["seed"])] = float(result["fid"])
    spreads = [statistics.stdev(fids.values()) for fids in by_gamma.values() if len(fids) > 1]
    return statistics.fmean(spreads) if spreads else 0.0


def search_round(settings: Mapping[str, Any], k: int, metric_files: Sequence[str], base_files: Sequence[str],
                 noise_files: Sequence[str], out: str) -> dict:
    base = read_all(base_files)  # read once: both the evaluated points and the noise need them
    evaluated = {(float(r["w"]), float(r["gamma"])): float(r["fid"]) for r in [*base, *read_all(metric_files)]}
    noise = fid_noise(base, read_all(noise_files))
    config = search.settings_from(settings, settings["w_grid"], settings["gammas"])
    step = search.next_points(config, evaluated, noise)
    if not step.done and k + 1 >= settings["max_rounds"]:
        step.done, step.next, step.reason = True, [], "max_rounds"
    if step.done and step.best is None:  # nothing asked (a budget below the design): the best evaluated
        step.best = min(evaluated, key=lambda p: (evaluated[p], p))
    result = {
        "round": k, "mode": config.mode, "noise": noise, "tol": max(config.tol, noise),
        "evaluated": [[w, g, fid] for (w, g), fid in sorted(evaluated.items())],
        "next": [list(p) for p in step.next], "done": step.done, "reason": step.reason,
        "best": list(step.best) if step.best else None,
        "fid_best": evaluated.get(step.best) if step.best else None,
    }
    write_json(out, result)
    print(f"round {k} ({config.mode}): {len(evaluated)} points evaluated, noise {noise:.4g}; "
          + (f"done ({step.reason}), best {step.best}" if step.done else f"next {step.next}"), file=sys.stderr)
    return result

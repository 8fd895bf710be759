"""How many FID evaluations (and sampled images) each search mode needs to come within 2% of the
dense grid's optimum, on the embedded toy models and on analytic (w, γ) surfaces.

    python benchmarks/search/run.py --workdir /tmp/neon-search-bench

The toys' bases and θ_s come from the workflow (`snakemake --until extract_selftrained
reference_statistics`, on config.yaml's toy models, run here when missing). Every evaluation then
runs in this process, exactly as the fid stage does it (merge, draw at the evaluation seed, FID);
the search modes call neon_steps.search, the same code as the workflow's rounds, with the base's FID
spread over seeds 3, 4, 5 as noise. A point is evaluated once and shared between modes (as in the
workflow), but each mode is charged for every point it asked. Results: results.json and the table in
README.md."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from neon_steps import config as neon_config, metrics, search  # noqa: E402

DENSE = tuple(round(-1 + 0.01 * i, 3) for i in range(201))    # the reference grid: w step 0.01
COARSE = tuple(round(-1 + 0.2 * i, 3) for i in range(11))      # greedy's walk (config.yaml's grid)
WITHIN = 1.02


def toy_config(workdir: Path, digits: bool = False) -> Path:
    """config.yaml's toy models, or (digits) config/digits.yaml's digits-ddim alone."""
    config = yaml.safe_load((REPO / ("config/digits.yaml" if digits else "config.yaml")).read_text())
    keep = "digits" if digits else "gauss2d"
    models = neon_config.resolve_models(config["models"])
    config["models"] = {k: {f: x for f, x in v.items() if f != "name"} for k, v in models.items()
                        if v["dataset"] == keep and (not digits or k == "digits-ddim")}
    if digits:  # the one (|S|, B) searched: 6,000 and 0.01 Mi
        model = config["models"]["digits-ddim"]
        model["synthetic"]["sizes"], model["finetune"]["budgets"] = [6000], [0.01]
    config["datasets"] = {keep: config["datasets"][keep]}
    path = workdir / ("digits.yaml" if digits else "toys.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Evaluator:
    """FID of one (model, S, B) at (w, γ) and seed, as the fid stage computes it; cached."""

    def __init__(self, spec: dict, dataset: dict, base: Path, ckpt: Path, reference: Path,
                 extractor: Path | None = None):
        import torch  # noqa: F401

        from neon_steps.io import load_tensors
        from neon_steps.models import load_adapter

        self.spec, self.dataset = spec, dataset
        self.adapter = load_adapter(spec)
        self.base, self.selftrained = load_tensors(base), load_tensors(ckpt)
        self.ref = load_tensors(reference)
        self.extractor = None if extractor is None else str(extractor)
        self.cache: dict[tuple, float] = {}

    def __call__(self, w: float, gamma: float, seed: int | None = None) -> float:
        from neon_steps.fid import evaluation_kappa
        from neon_steps.extrapolation import merge_state_dicts
        from neon_steps.sampling import balanced_labels, draw

        settings = self.spec["evaluate"]
        seed = settings["seed"] if seed is None else seed
        key = (w, gamma, seed)
        if key not in self.cache:
            adapter = self.adapter
            adapter.load_state_dict(merge_state_dicts(self.base, self.selftrained, w,
                                                      keep_base=lambda n: not adapter.mergeable(n)))
            labels = balanced_labels(settings["n"], adapter.num_classes, seed) if adapter.conditional else None
            samples = draw(adapter, settings["n"], seed, evaluation_kappa(self.spec, gamma),
                           settings["shard_size"], labels, desc="benchmark")
            feats = metrics.features(self.dataset, samples, self.extractor)
            self.cache[key] = metrics.fid(feats, self.ref)
        return self.cache[key]


def measure(settings: search.Settings, f, noise: float, target: float, base: tuple) -> dict:
    """Drive one mode to its end: evaluations and rounds to get within 2% of the grid optimum
    (None if never), and at the end. The base point counts as evaluated (the table needs it)."""
    evaluated = {base: f(*base)}
    reached = None
    rounds = 0
    while True:
        step = search.next_points(settings, evaluated, noise)
        if step.done:
            break
        rounds += 1
        evaluated.update({p: f(*p) for p in step.next})
        if reached is None and min(evaluated.values()) <= target:
            reached = {"evaluations": len(evaluated), "rounds": rounds}
    return {"reached": reached, "evaluations": len(evaluated), "rounds": rounds, "best": list(step.best),
            "fid_best": step.asked.get(step.best, min(evaluated.values())), "reason": step.reason}


def modes(gammas: tuple, dense: tuple, coarse: tuple, xtol: float) -> dict[str, search.Settings]:
    refine_gamma = (gammas[1] - gammas[0]) if len(gammas) > 1 else 0.0
    return {
        "grid": search.Settings(mode="grid", w_grid=dense, gammas=gammas, max_evals=10**6),
        "greedy": search.Settings(mode="greedy", w_grid=coarse, gammas=gammas, refine_w=0.1,
                                  refine_gamma=refine_gamma, max_evals=200),
        "brent": search.Settings(mode="brent", w_grid=dense, gammas=gammas, xtol=xtol),
        "quadratic": search.Settings(mode="quadratic", w_grid=dense, gammas=gammas, xtol=xtol),
    }


def run_search(name: str, f, n: int, noise: float, gammas: tuple = (1.0,), dense: tuple = DENSE,
               coarse: tuple = COARSE, xtol: float = 0.02) -> dict:
    grid_fid = min(f(w, g) for w in dense for g in gammas)
    out = {"name": name, "n": n, "noise": noise, "grid_points": len(dense) * len(gammas), "grid_fid": grid_fid,
           "grid_w": min(((w, g) for w in dense for g in gammas), key=lambda p: f(*p)), "modes": {}}
    # without the floor: what the strategies reach when they chase differences below the noise
    for suffix, floor in (("", noise), (", no floor", 0.0)):
        for mode, settings in modes(gammas, dense, coarse, xtol).items():
            if not suffix or mode in ("brent", "quadratic"):
                out["modes"][mode + suffix] = measure(settings, f, floor, WITHIN * grid_fid, (0.0, gammas[0]))
    return out


def analytic_surfaces():
    """2-D (w, γ) surfaces, for the quadratic's 2-D fit (no embedded guided model is cheap enough
    for a dense 2-D grid): a skewed bowl, and the same with noise of a fixed draw per point."""
    import numpy as np

    def bowl(w, g):
        d = np.array([w - 0.37, g - 1.6])
        q = 5 * d[0] ** 2 + 3 * d[1] ** 2 + 2 * d[0] * d[1]
        return float(10 + q + 2 * q ** 2)

    def noisy(w, g):
        rng = np.random.default_rng([int(round(w * 1000)) + 5000, int(round(g * 1000))])
        return bowl(w, g) + 0.05 * rng.standard_normal()

    gammas = (1.0, 1.25, 1.5, 1.75, 2.0)
    return [("analytic bowl (w, γ)", bowl, 0.0, gammas), ("analytic bowl (w, γ) + noise 0.05", noisy, 0.05, gammas)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="where the toys' workflow artifacts go")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--models", nargs="*", default=None, help="toy models (default: all four)")
    parser.add_argument("--digits", action="store_true",
                        help="instead: config/digits.yaml's digits-ddim over (w, γ), w step 0.1 on [0, 1.2], "
                             "γ 1 to 2 (CPU: ~20 min)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    config_path = toy_config(args.workdir, args.digits)
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(args.workdir),
                    "--configfile", str(config_path), "--cores", "2",
                    "--until", "extract_selftrained", "reference_statistics", "-q"], check=True)
    config = neon_config.load(config_path)
    config["models"] = neon_config.resolve_models(config["models"])
    neon_config.validate(config)
    results = []
    start = time.time()
    if args.digits:
        results.append(digits_search(config, args.workdir / "results"))
        print(summary_line(results[-1]), file=sys.stderr, flush=True)
    for name, spec in ({} if args.digits else config["models"]).items():
        if args.models and name not in args.models:
            continue
        for S in neon_config.sizes(spec):
            for B in neon_config.budgets(spec):
                root = args.workdir / "results"
                base_weights = root / neon_config.base_owner(name, config["models"]) / "base.safetensors"
                f = Evaluator(spec, config["datasets"][spec["dataset"]], base_weights,
                              root / name / f"S{S}/ckpt/B{neon_config.fmt(B)}.safetensors",
                              root / "reference/gauss2d.safetensors")
                base = [f(0.0, 1.0, seed) for seed in (spec["evaluate"]["seed"], 4, 5)]
                noise = statistics.stdev(base)
                results.append(run_search(f"{name} S{S} B{neon_config.fmt(B)}", lambda w, g: f(w, g),
                                          spec["evaluate"]["n"], noise))
                print(summary_line(results[-1]), file=sys.stderr, flush=True)
    for name, fn, noise, gammas in ([] if args.digits else analytic_surfaces()):
        results.append(run_search(name, fn, 0, noise, gammas))
        print(summary_line(results[-1]), file=sys.stderr, flush=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "seconds": round(time.time() - start, 1),
                                    "within": WITHIN, "results": results}, indent=1) + "\n")
    print(table(results))
    return 0


def digits_search(config: dict, root: Path) -> dict:
    """digits-ddim (|S| = 6,000, B = 0.01) over w in [0, 1.2] and γ in [1, 2]: a real 2-D search."""
    spec = config["models"]["digits-ddim"]
    S, B = neon_config.sizes(spec)[0], neon_config.budgets(spec)[0]
    f = Evaluator(spec, config["datasets"]["digits"], root / "digits-ddim/base.safetensors",
                  root / f"digits-ddim/S{S}/ckpt/B{neon_config.fmt(B)}.safetensors",
                  root / "reference/digits.safetensors", root / "classifier/digits.safetensors")
    gammas = (1.0, 1.25, 1.5, 1.75, 2.0)
    noise = statistics.stdev(f(0.0, 1.25, seed) for seed in (spec["evaluate"]["seed"], 4, 5))
    dense = tuple(round(0.1 * i, 3) for i in range(13))
    return run_search(f"digits-ddim S{S} B{neon_config.fmt(B)} (w, γ)", lambda w, g: f(w, g), spec["evaluate"]["n"],
                      noise, gammas, dense=dense, coarse=tuple(round(0.2 * i, 3) for i in range(7)), xtol=0.05)


def summary_line(r: dict) -> str:
    return f"{r['name']}: grid {r['grid_fid']:.4g} at {r['grid_w']}; " + ", ".join(
        f"{m} {v['evaluations']} ({v['fid_best'] / r['grid_fid']:.3f})" for m, v in r["modes"].items())


SHOWN = ("greedy", "brent", "quadratic", "brent, no floor", "quadratic, no floor")


def table(results: list[dict]) -> str:
    """Markdown: per search and mode, evaluations to get within 2% of the grid optimum ("never"
    if it stopped before) / at its end, and the chosen point's FID over the grid optimum's."""
    lines = ["| search | noise sd | grid: evals, FID* | " + " | ".join(SHOWN) + " |",
             "|---|---:|---:|" + "---:|" * len(SHOWN)]
    totals = {m: [0, 0, 0] for m in ("grid",) + SHOWN}
    for r in results:
        cells = []
        for m in SHOWN:
            v = r["modes"][m]
            to = v["reached"]["evaluations"] if v["reached"] else "never"
            cells.append(f"{to} / {v['evaluations']} ({v['fid_best'] / r['grid_fid']:.3f})")
        lines.append(f"| {r['name']} | {r['noise']:.2g} | {r['grid_points']}, {r['grid_fid']:.4g} | "
                     + " | ".join(cells) + " |")
        if r["n"]:
            for m in totals:
                v = r["modes"][m]
                totals[m][0] += v["evaluations"]
                totals[m][1] += v["evaluations"] * r["n"]
                totals[m][2] += 1 if v["fid_best"] <= WITHIN * r["grid_fid"] else 0
    count = sum(1 for r in results if r["n"])
    lines += ["", "| toys, all searches | evaluations | of the grid's | sampled images | chosen point within 2% |",
              "|---|---:|---:|---:|---:|"]
    for m, (evals, images, ok) in totals.items():
        lines.append(f"| {m} | {evals} | {100 * evals / totals['grid'][0]:.1f} % | {images:,} | {ok} of {count} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

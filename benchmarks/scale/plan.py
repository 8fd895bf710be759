"""The paper at scale, planned: for each config of config/paper/, the jobs of each stage, the
images each job draws or sees, and the GPU-hours they imply at the per-image costs of costs.yaml,
beside what the authors' 8-GPU torchrun scripts would spend on the same grid.

    python benchmarks/scale/plan.py                  # the table, as markdown; plan.json beside this

The workflow's jobs: S drawn by ceil(|S| / synthetic.images_per_job) jobs per |S|; a fine-tune
chain of one segment per budget per |S| (`resources.finetune.gpu` GPUs each); per (|S|, B) a
search of n-image evaluations, as many as benchmarks/search measured its mode to take (brent:
6 a γ line; quadratic: 6 over w alone, 16 over (w, γ); grid: every point; never above max_evals) (each ceil(n /
evaluate.images_per_job) jobs, plus a scoring job when that is more than one), and a final
evaluation of final_n − n new images in ceil((final_n − n) / images_per_job) jobs; the base at each
noise seed and γ. The authors' scripts sweep the whole w × γ grid at n for each (|S|, B) and
evaluate 50k at its best, on one 8-GPU allocation (wall time: GPU-hours / 8, with perfect scaling).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
from neon_steps import config as neon_config  # noqa: E402
from neon_steps.search import Settings  # noqa: E402
from neon_steps.synthetic import part_count  # noqa: E402

def codebase(name: str, model: dict) -> str:
    """The costs.yaml entry of a model: its adapter (one per codebase), the large variants by name."""
    for variant in ("var-d36", "xar-l"):
        if name.startswith(variant):
            return variant
    return model["adapter"]


def jobs(count: int, per_job: int | None) -> int:
    return math.ceil(count / (per_job or count))


def evaluations(model: dict) -> int:
    """Evaluations one search takes, as benchmarks/search measured them (results*.json there)."""
    search, lines = neon_config.search(model), len(neon_config.gammas(model))
    typical = {"grid": len(neon_config.w_grid(model)) * lines, "brent": 6 * lines,
               "quadratic": 6 if lines == 1 else 16}.get(search.get("mode", "grid"), Settings.max_evals)
    return min(typical, search.get("max_evals", Settings.max_evals))


def plan_model(name: str, model: dict, costs: dict, startup: float) -> dict:
    cost, evaluate = costs[codebase(name, model)], model["evaluate"]
    sizes, budgets = neon_config.sizes(model), neon_config.budgets(model)
    trains = "training_of" not in model  # an evaluation knob (IMM's T) reuses another's training
    searches = len(sizes) * len(budgets)
    evals = evaluations(model)
    n, final_n, per_eval = evaluate["n"], neon_config.final_n(model) or evaluate["n"], evaluate.get("images_per_job")
    eval_parts = jobs(n, per_eval)
    noise = len(evaluate.get("noise_seeds", [])) * len(neon_config.gammas(model))
    grid = len(neon_config.w_grid(model)) * len(neon_config.gammas(model))
    stages = {
        "sample": {"jobs": sum(part_count(model["synthetic"], s) for s in sizes) if trains else 0,
                   "images": sum(sizes) if trains else 0, "cost": cost["sample"]},
        "finetune": {"jobs": searches if trains else 0, "images": len(sizes) * max(budgets) * 1e6 if trains else 0,
                     "cost": cost["train"]},
        "search": {"jobs": searches * evals * eval_parts, "scoring_jobs": searches * evals * (eval_parts > 1),
                   "images": searches * evals * n, "cost": cost["evaluate"]},
        "final": {"jobs": searches * jobs(final_n - n, per_eval) if final_n > n else 0,
                  "scoring_jobs": searches if final_n > n else 0,  # the search's features + the new ones
                  "images": searches * (final_n - n), "cost": cost["evaluate"]},
        "noise": {"jobs": noise * eval_parts, "images": noise * n, "cost": cost["evaluate"]},
    }
    for stage in stages.values():
        stage["images_per_job"] = round(stage["images"] / stage["jobs"]) if stage["jobs"] else 0
        jobs_started = stage["jobs"] + stage.get("scoring_jobs", 0)
        stage["gpu_hours"] = (stage["images"] * stage["cost"] + jobs_started * startup) / 3600
    workflow = sum(s["gpu_hours"] for s in stages.values())
    # The authors: the same S and fine-tune, the whole grid at n per (|S|, B), 50k at its best.
    authors = (stages["sample"]["images"] * cost["sample"] + stages["finetune"]["images"] * cost["train"]
               + searches * (grid * n + final_n) * cost["evaluate"]) / 3600
    return {"model": name, "stages": stages, "gpu_hours": workflow, "authors_gpu_hours": authors,
            "authors_wall_hours_8gpu": authors / 8, "grid_points": grid, "evaluations_per_search": evals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--costs", type=Path, default=HERE / "costs.yaml")
    parser.add_argument("--json", type=Path, default=HERE / "plan.json")
    opts = parser.parse_args()
    costs = yaml.safe_load(opts.costs.read_text())
    rows = []
    for path in sorted((REPO / "config/paper").glob("*.yaml")):
        config = neon_config.load(path)
        models = neon_config.resolve_models(config["models"])
        rows += [plan_model(name, model, costs["codebases"], costs["startup_s"]) for name, model in models.items()]
    opts.json.write_text(json.dumps({"costs": costs, "models": rows}, indent=2) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    head = ["| model | S: jobs × images | fine-tune: images | search: jobs × images (+ scoring jobs) "
            "| final: jobs × images (+ scoring jobs) "
            "| GPU-h (workflow, start-ups included) | GPU-h (authors' grid) | authors' wall h on 8 GPUs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["stages"]
        head.append(f"| {r['model']} | {s['sample']['jobs']} × {s['sample']['images_per_job']:,} "
                    f"| {s['finetune']['images'] / 1e6:.2f} Mi "
                    f"| {s['search']['jobs']} × {s['search']['images_per_job']:,} (+{s['search']['scoring_jobs']}) "
                    f"| {s['final']['jobs']} × {s['final']['images_per_job']:,} (+{s['final']['scoring_jobs']}) "
                    f"| {r['gpu_hours']:.1f} | {r['authors_gpu_hours']:.1f} | {r['authors_wall_hours_8gpu']:.1f} |")
    return "\n".join(head)


if __name__ == "__main__":
    main()

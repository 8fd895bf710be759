"""How often the toy models' w* has the paper's sign (Fig. B.2) when every seed of the config is
shifted by the same offset, for config.yaml before (by default where this branch left main; once
merged, pass --before 7f15a46, main's textbook-DDIM toys) and config.yaml of this checkout.

    python benchmarks/toy_seeds/run.py --workdir /tmp/neon-toy-seeds

For each config and offset, every seed of the four toy models (base.seed, base.data_seed,
synthetic.seed, finetune.seed, evaluate.seed) and the data set's reference.seed get the offset
added; then each model runs the workflow's stages in this process, in the workflow's order and
with its functions: reference, base, sample, finetune (budget after budget), ckpt, merge (every
w of the grid) and fid (FID, precision, recall), each writing its artifact under --workdir as the
rule would. w* is the grid point of lowest FID, as table_a1.csv picks it. A model whose resolved
settings are the same in two configs (the AR toys) is computed once and reported for both.
Results: results.json and the table in README.md.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from neon_steps import config as neon_config  # noqa: E402
from neon_steps.config import fmt  # noqa: E402

DATASET = "gauss2d"
SEEDED = {"base": ("seed", "data_seed"), "synthetic": ("seed",), "finetune": ("seed",), "evaluate": ("seed",)}


def toy_config(text: str) -> dict:
    """The toy models of a workflow config (those on gauss2d), resolved and validated."""
    config = yaml.safe_load(text)
    config["models"] = {name: spec for name, spec in neon_config.resolve_models(config["models"]).items()
                        if spec["dataset"] == DATASET}
    config["datasets"] = {DATASET: config["datasets"][DATASET]}
    neon_config.validate(config)
    neon_config.check_models(config["models"], config["datasets"])
    return config


def shifted(config: dict, offset: int) -> dict:
    """Every seed of the toys' config plus `offset`: a different draw of everything random."""
    config = copy.deepcopy(config)
    config["datasets"][DATASET]["reference"]["seed"] += offset
    for spec in config["models"].values():
        for section, fields in SEEDED.items():
            for field in fields:
                spec[section][field] += offset
    return config


def expected_sign(spec: dict) -> int:
    """The paper's sign of w*: + for a mode-seeking S (ζ > 1, τ < 1), − for a diversity-seeking one."""
    kappa = spec["synthetic"]["kappa"]
    if "zeta" in kappa:
        return 1 if kappa["zeta"] > 1 else -1
    return 1 if kappa["tau"] < 1 else -1


def settings_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_model(spec: dict, dataset: dict, workdir: Path) -> dict:
    """One model through reference, base, sample, finetune, ckpt, merge and fid, as the workflow
    runs them; FID per (S, B, w) and w* per (S, B). Artifacts live in folders named by a hash of
    the settings that make them, and one that exists is not made again (as in the workflow): the
    two diffusion toys share one base, and a benchmark run that was stopped resumes."""
    from neon_steps import stage
    from neon_steps.base import make_base
    from neon_steps.ckpt import extract_weights
    from neon_steps.fid import evaluate
    from neon_steps.finetune import finetune_segment
    from neon_steps.io import read_json
    from neon_steps.merge import merge_checkpoints
    from neon_steps.models import load_adapter
    from neon_steps.reference import build_reference
    from neon_steps.sample import sample_synthetic
    from neon_steps.synthetic import write_manifest

    model = {**spec, "dataset_spec": dataset}
    trained = {k: spec[k] for k in ("adapter", "arch", "base")}
    base_dir = workdir / "base" / settings_key(trained, {k: v for k, v in dataset.items() if k != "reference"})
    folder = workdir / "model" / settings_key(spec, dataset)
    reference = workdir / "reference" / f"{settings_key(dataset)}.safetensors"
    base = base_dir / "base.safetensors"
    for path in (base_dir, folder, reference.parent):
        path.mkdir(parents=True, exist_ok=True)
    adapter = load_adapter(model)
    out = {}
    with stage.logged(str(folder / "stages.log")):
        if not reference.exists():
            build_reference(DATASET, dataset, str(reference))
        if not base.exists():
            make_base(model, str(base))
        for S in neon_config.sizes(spec):
            synthetic, part = folder / f"S{S}.synthetic.json", folder / f"S{S}.synthetic.part0.safetensors"
            if not synthetic.exists():  # S in one part, as the workflow draws it without images_per_job
                sample_synthetic(model, S, 0, str(base), str(part))
                write_manifest(synthetic, [str(part)])
            start = base
            for B in neon_config.budgets(spec):
                state, ckpt = folder / f"S{S}.B{fmt(B)}.state.safetensors", folder / f"S{S}.B{fmt(B)}.safetensors"
                if not state.exists():
                    finetune_segment(model, B, str(synthetic), str(start), str(state))
                if not ckpt.exists():
                    extract_weights(str(state), str(ckpt))
                start = state
                ws = neon_config.w_grid(spec)
                metrics = {w: folder / f"S{S}.B{fmt(B)}.w{fmt(w)}.json" for w in ws}
                todo = [w for w in ws if not metrics[w].exists()]
                merged = {w: folder / f"S{S}.B{fmt(B)}.w{fmt(w)}.safetensors" for w in todo}
                if todo:  # one pass for all w (the workflow: one merge job per w, the same function)
                    merge_checkpoints(base, ckpt, todo, [merged[w] for w in todo],
                                      keep_base=lambda name: not adapter.mergeable(name))
                for w in todo:
                    evaluate(model, str(merged[w]), str(reference), {"S": S, "B": B, "w": w, "gamma": 1.0},
                             str(metrics[w]))
                    merged[w].unlink()
                fids = {w: read_json(metrics[w])["fid"] for w in ws}
                w_star = min(fids, key=fids.get)
                out[f"S{S} B{fmt(B)}"] = {"w_star": w_star, "fid_base": fids[0.0], "fid_best": fids[w_star],
                                          "ratio": fids[w_star] / fids[0.0],
                                          "fid": {fmt(w): f for w, f in fids.items()}}
    return out


def summarise(runs: list[dict], sign: int) -> dict:
    """Over the offsets of one (model, S, B): how often w* has the paper's sign (w* = 0 does not),
    and the median FID(w*)/FID(0)."""
    signs = [1 if r["w_star"] > 0 else -1 if r["w_star"] < 0 else 0 for r in runs]
    return {"sign": sign, "right": sum(s == sign for s in signs), "flat": signs.count(0),
            "wrong": sum(s == -sign for s in signs),
            "offsets": len(runs), "median_ratio": statistics.median(r["ratio"] for r in runs),
            "w_star": [r["w_star"] for r in runs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="where each run's artifacts go")
    parser.add_argument("--offsets", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--before", default=None,
                        help="git revision whose config.yaml is 'before' (default: where this branch left main)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *argv], check=True, capture_output=True, text=True).stdout

    before = args.before or git("merge-base", "HEAD", "main").strip()[:7]
    configs = {f"before ({before})": toy_config(git("show", f"{before}:config.yaml")),
               "after (this checkout)": toy_config((REPO / "config.yaml").read_text())}
    start, load = time.time(), [os.getloadavg()]
    done: dict[str, dict] = {}  # a model's resolved settings at an offset -> its results
    results = {label: {} for label in configs}
    for offset in args.offsets:
        for label, base_config in configs.items():
            config = shifted(base_config, offset)
            dataset = config["datasets"][DATASET]
            for name, spec in config["models"].items():
                key = settings_key(spec, dataset)
                if key not in done:
                    done[key] = run_model(spec, dataset, args.workdir)
                for point, r in done[key].items():
                    results[label].setdefault(f"{name} {point}", {"sign": expected_sign(spec), "runs": []})
                    results[label][f"{name} {point}"]["runs"].append({"offset": offset, **r})
                    print(f"{label} offset {offset} {name} {point}: w* {fmt(r['w_star'])}, "
                          f"FID(w*)/FID(0) {r['ratio']:.3f}", file=sys.stderr, flush=True)
        load.append(os.getloadavg())
    summary = {label: {point: summarise(v["runs"], v["sign"]) for point, v in rows.items()}
               for label, rows in results.items()}
    report = {"command": " ".join(sys.argv), "seconds": round(time.time() - start, 1), "cpus": os.cpu_count(),
              "load_average_1min": [round(avg[0], 2) for avg in load], "offsets": args.offsets,
              "summary": summary, "results": results}
    text = json.dumps(report, indent=1) + "\n"
    from neon_steps.io import write_text

    write_text(args.out, text)
    print(table(summary))
    return 0


def table(summary: dict) -> str:
    """Markdown: per model and budget, w* with the paper's sign (of the offsets; flat w* = 0 in
    brackets) and the median FID(w*)/FID(0), before and after."""
    labels = list(summary)
    columns = " | ".join(f"{label}: right sign | {label}: median FID(w*)/FID(0)" for label in labels)
    lines = ["| model, S, B | paper's sign | " + columns + " |",
             "|---|:-:|" + "---:|---:|" * len(labels)]
    for point in summary[labels[-1]]:
        cells = []
        for label in labels:
            s = summary[label].get(point)
            if s is None:
                cells += ["—", "—"]
                continue
            flat = f" ({s['flat']} flat)" if s["flat"] else ""
            cells += [f"{s['right']}/{s['offsets']}{flat}", f"{s['median_ratio']:.2f}"]
        sign = "+" if summary[labels[-1]][point]["sign"] > 0 else "−"
        lines.append(f"| {point} | {sign} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

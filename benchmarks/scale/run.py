"""Memory against the size of S and of a draw: peak RSS of a sampling job and of a fine-tune job
at |S| = 10k, 100k and 1M tiny images (3x32x32 uint8, 3 KB each: 1M is 3.1 GB on disk), each in a
fresh process running the stage's library function, as its job would.

    python benchmarks/scale/run.py --dir /tmp/neon-scale     # about 10 minutes; needs 3.5 GB free

Side by side in the same run, the fine-tune as it was before S lived in parts (S loaded whole,
`load_file`, then indexed in memory): its peak RSS grows with |S|, the streamed one's does not.
Results: results.json beside this file, and the table it prints (also `--plan`: the paper-scale
plan, plan.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SIZES = (10_000, 100_000, 1_000_000)
STEPS, BATCH = 50, 128  # each fine-tune: 50 steps of 128 rows drawn from all of S
MODEL = {"name": "tiny", "adapter": "benchmarks.scale.tiny_images:TinyImages", "arch": {},
         "synthetic": {"seed": 1, "kappa": {}, "shard_size": 5000},
         "finetune": {"lr": 1e-4, "batch_size": BATCH, "seed": 2}}

# Each measurement is one process: the stage's function, then its own wall time and peak RSS.
CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
what, args = sys.argv[1], json.loads(sys.argv[2])
start = time.perf_counter()
if what == "sample":
    from neon_steps.sample import sample_synthetic
    sample_synthetic(args["model"], args["size"], 0, args["base"], args["out"])
elif what == "finetune":
    from neon_steps.finetune import finetune_segment
    finetune_segment(args["model"], args["budget"], args["manifest"], args["base"], args["out"])
elif what == "finetune-in-memory":  # the fine-tune before S lived in parts: S loaded whole
    from neon_steps.io import load_tensors
    from neon_steps.models import load_adapter
    from neon_steps.training import Recipe, Trainer, steps_for
    adapter = load_adapter(args["model"]).load(args["base"])
    S = load_tensors(args["part"])
    recipe = Recipe.from_config(args["model"]["finetune"])
    Trainer(adapter, recipe).train(S["samples"], None, steps_for(args["budget"] * 1e6, recipe.batch_size))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(what: str, **args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, what, json.dumps(args)], env=env, cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/neon-scale"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--keep", action="store_true", help="keep the folder of S")
    opts = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from neon_steps.models import load_adapter
    from neon_steps.synthetic import write_manifest

    opts.dir.mkdir(parents=True, exist_ok=True)
    base = opts.dir / "base.safetensors"
    load_adapter(MODEL).save(base)
    budget = STEPS * BATCH / 1e6
    rows = []
    try:
        for size in opts.sizes:
            part, manifest = opts.dir / f"S{size}/part0.safetensors", opts.dir / f"S{size}/manifest.json"
            model = {**MODEL, "synthetic": {**MODEL["synthetic"], "sizes": [size]}}
            sample = measure("sample", model=model, size=size, base=str(base), out=str(part))
            write_manifest(manifest, [str(part)])
            streamed = measure("finetune", model=model, budget=budget, manifest=str(manifest), base=str(base),
                               out=str(opts.dir / f"S{size}/state.safetensors"))
            whole = measure("finetune-in-memory", model=model, budget=budget, part=str(part), base=str(base))
            rows.append({"size": size, "S_gb": part.stat().st_size / 1e9, "sample": sample,
                         "finetune": streamed, "finetune_in_memory": whole})
            print(f"|S| = {size:>9,}: sample {sample['peak_rss_mb']:7.0f} MB {sample['seconds']:6.1f} s | "
                  f"fine-tune {streamed['peak_rss_mb']:7.0f} MB {streamed['seconds']:6.1f} s | "
                  f"S in memory {whole['peak_rss_mb']:7.0f} MB {whole['seconds']:6.1f} s", flush=True)
            if not opts.keep:
                shutil.rmtree(opts.dir / f"S{size}")
    finally:
        if not opts.keep:
            shutil.rmtree(opts.dir, ignore_errors=True)
    load = os.getloadavg()
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_average": [round(x, 2) for x in load], "date": time.strftime("%Y-%m-%d"),
              "steps": STEPS, "batch": BATCH, "image": "3x32x32 uint8", "rows": rows}
    opts.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def table(result: dict) -> str:
    lines = ["| |S| | S on disk | sample: peak RSS | fine-tune (parts): peak RSS | fine-tune (S in memory): peak RSS |",
             "|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['size']:,} | {row['S_gb']:.2f} GB | {row['sample']['peak_rss_mb']:.0f} MB "
                     f"({row['sample']['seconds']:.1f} s) | {row['finetune']['peak_rss_mb']:.0f} MB "
                     f"({row['finetune']['seconds']:.1f} s) | {row['finetune_in_memory']['peak_rss_mb']:.0f} MB "
                     f"({row['finetune_in_memory']['seconds']:.1f} s) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""S drawn by one SLURM job against S drawn by K jobs, on the local test cluster (scripts/slurm/):
the wall time of `snakemake --profile profiles/slurm <S's manifest>` each way, from the same base,
and whether the two S are the same bytes.

    python benchmarks/scale/slurm_fanout.py --jobs 2    # root on Debian: starts and stops the cluster

The model is the tests' toy DDPM (tests/configs/tiny.yaml) drawing |S| = 2M points with 100
sampling steps: about a minute of one core in one job. The cluster's node has the machine's cores;
K jobs can run side by side on as many. Results: slurm_fanout.json beside this file.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SIZE = 2_000_000
PROFILE = ["--profile", str(REPO / "profiles/slurm"), "--slurm-init-seconds-before-status-checks", "2"]


def snakemake(workdir: Path, config: Path, *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "--configfile", str(config), *args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def config_with(folder: Path, name: str, per_job: int) -> Path:
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["models"] = {"ddpm": config["models"]["ddpm"]}
    config["models"]["ddpm"]["synthetic"].update(sizes=[SIZE], shard_size=5000, images_per_job=per_job,
                                                 kappa={"steps": 100, "zeta": 1.1})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="sample jobs of the fanned-out S")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/neon-slurm-fanout"))
    parser.add_argument("--json", type=Path, default=HERE / "slurm_fanout.json")
    opts = parser.parse_args()
    shutil.rmtree(opts.dir, ignore_errors=True)
    opts.dir.mkdir(parents=True)
    manifest = f"results/ddpm/S{SIZE}/synthetic/manifest.json"
    subprocess.run([str(REPO / "scripts/slurm/start-cluster.sh")], check=True, capture_output=True)
    try:
        one = config_with(opts.dir, "one", SIZE)
        many = config_with(opts.dir, "many", -(-SIZE // opts.jobs // 5000) * 5000)
        base_dir = opts.dir / "base"
        snakemake(base_dir, one, *PROFILE, "results/ddpm/base.safetensors")
        runs = {}
        for name, config in (("one job", one), (f"{opts.jobs} jobs", many)):
            workdir = opts.dir / name.replace(" ", "-")
            shutil.copytree(base_dir, workdir, symlinks=True)
            runs[name] = {"seconds": round(snakemake(workdir, config, *PROFILE, manifest), 1), "workdir": workdir}
    finally:
        subprocess.run([str(REPO / "scripts/slurm/stop-cluster.sh")], check=True, capture_output=True)
    (first, a), (second, b) = runs.items()
    parts_a = sorted((a["workdir"] / manifest).parent.glob("part*.safetensors"))
    parts_b = sorted((b["workdir"] / manifest).parent.glob("part*.safetensors"))
    same = same_samples(parts_a, parts_b)
    result = {"size": SIZE, "jobs": opts.jobs, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "seconds": {name: run["seconds"] for name, run in runs.items()},
              "speedup": round(a["seconds"] / b["seconds"], 2), "same_samples": same,
              "date": time.strftime("%Y-%m-%d")}
    opts.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"|S| = {SIZE:,}: {first} {a['seconds']} s, {second} {b['seconds']} s "
          f"({result['speedup']}x); the same samples: {same}")
    shutil.rmtree(opts.dir, ignore_errors=True)


def same_samples(one: list[Path], many: list[Path]) -> bool:
    sys.path.insert(0, str(REPO))
    import torch

    from neon_steps.io import load_tensors

    return torch.equal(load_tensors(one[0])["samples"], torch.cat([load_tensors(p)["samples"] for p in many]))


if __name__ == "__main__":
    main()

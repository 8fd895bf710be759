"""What a job costs before it does any work, against a bare `python -c "import torch"`.

    python benchmarks/startup/run.py --workdir /tmp/neon-startup-bench

Measures, in one run on one machine: the median wall time of a bare Python, `import torch` and
`import torch_fidelity` (five tries each); then the tiny test config (tests/configs/tiny.yaml)
run by snakemake with one core, so jobs do not compete, once with a merge and a fid job per
point (evaluate.jobs: per_point) and once with a job per (|S|, B, γ) line (per_line). For each
rule: its jobs' median wall time (the rule's benchmark file), the median work (the stage's own
"done in" line, timed after its imports) and the start-up, wall minus work, as a ratio to the
bare torch import. `--breakdown results` prints the same per-rule table for a finished run
(where the time of the default run went). "Scheduler" is the run's wall time minus the sum of its jobs': snakemake's
own time between jobs. Results: results.json beside this file, and the table it prints.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
IMPORTS = {"python": "pass", "import torch": "import torch", "import torch_fidelity": "import torch_fidelity"}
DONE = re.compile(r"^done in ([0-9.]+) s$", re.M)


def median_seconds(code: str, tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def breakdown(results: Path) -> dict:
    """Per rule of a finished run: jobs, summed wall and CPU seconds, median start-up."""
    rules: dict[str, dict] = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule, *name = tsv.relative_to(results / "benchmarks").parts  # as the rules' log() and bench() name them
        header, values = (line.split("\t") for line in tsv.read_text().splitlines()[:2])
        row = dict(zip(header, values))
        log = results / "logs" / rule / "/".join(name).replace(".tsv", ".log")
        work = DONE.findall(log.read_text()) if log.exists() else []
        entry = rules.setdefault(rule, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "startups": []})
        entry["jobs"] += 1
        entry["wall_s"] += float(row["s"])
        entry["cpu_s"] += float(row["cpu_time"])
        if work:
            entry["startups"].append(float(row["s"]) - float(work[-1]))
    return {rule: {"jobs": r["jobs"], "wall_s": round(r["wall_s"], 1), "cpu_s": round(r["cpu_s"], 1),
                   "startup_s": round(statistics.median(r["startups"]), 2) if r["startups"] else None}
            for rule, r in rules.items()}


def run_workflow(workdir: Path, jobs: str, extra: list[str]) -> dict:
    """The tiny config with evaluate.jobs = `jobs`, from scratch, on one core."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = yaml.safe_load(TINY.read_text())
    for model in config["models"].values():
        model["evaluate"]["jobs"] = jobs
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                    "--configfile", str(workdir / "config.yaml"), "--cores", "1", "--quiet", *extra],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    rules = breakdown(workdir / "results")
    return {"wall_s": round(wall, 2), "jobs": sum(r["jobs"] for r in rules.values()),
            "scheduler_s": round(wall - sum(r["wall_s"] for r in rules.values()), 2), "rules": rules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/neon-startup-bench"))
    parser.add_argument("--breakdown", type=Path, metavar="RESULTS",
                        help="only print the per-rule table of a finished run's results folder")
    args = parser.parse_args()
    if args.breakdown:
        print("| rule | jobs | wall s (sum) | CPU s (sum) | median start-up s |\n|---|---:|---:|---:|---:|")
        for rule, r in sorted(breakdown(args.breakdown).items(), key=lambda item: -item[1]["wall_s"]):
            print(f"| {rule} | {r['jobs']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['startup_s']} |")
        return
    load_before = os.getloadavg()
    imports = {name: round(median_seconds(code), 3) for name, code in IMPORTS.items()}
    runs = {jobs: run_workflow(args.workdir / jobs, jobs, []) for jobs in ("per_point", "per_line")}
    torch_s = imports["import torch"]
    result = {"command": "python benchmarks/startup/run.py --workdir " + str(args.workdir),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "cpus": os.cpu_count(), "imports_s": imports, "runs": runs}
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")

    print("bare imports (median of 5): " + ", ".join(f"{k} {v:.2f} s" for k, v in imports.items()))
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}\n")
    print("| run | rule | jobs | wall s (sum) | CPU s (sum) | median start-up s | start-up ÷ import torch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for jobs, run in runs.items():
        for rule, r in sorted(run["rules"].items()):
            ratio = f"{r['startup_s'] / torch_s:.2f}" if r["startup_s"] is not None else ""
            print(f"| {jobs} | {rule} | {r['jobs']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['startup_s']} "
                  f"| {ratio} |")
        print(f"| {jobs} | **whole run** | {run['jobs']} | {run['wall_s']:.1f} "
              f"(scheduler {run['scheduler_s']:.1f}) | | | |")


if __name__ == "__main__":
    main()

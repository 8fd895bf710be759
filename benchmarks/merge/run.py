"""Time the streaming merge against the I/O floor and the naive merge on a synthetic checkpoint pair.

    python benchmarks/merge/run.py --size-gb 2
    python benchmarks/merge/run.py --layout uniform --size-gb 2 --json benchmarks/merge/results-2cpu.json

Each method runs in a fresh process that reports its own wall, user and system time (imports
excluded, except for the neon-merge command) and peak RSS. Before each run both inputs are read
once, so every method starts from the same warm page cache (dropping it needs root), and every
method fsyncs its output. Methods take turns, and the best time of --repeat runs counts. See
README.md for what the rows mean.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

METHODS = {
    "idle": "Python with torch and neon_steps.merge imported, nothing done",
    "floor": "read both inputs, copy the base's bytes to the output (sendfile), no arithmetic",
    "neon-merge": "`merge_checkpoints`: streamed, both inputs' sha256 in the cache",
    "neon-merge-hashing": "`merge_checkpoints`, hashing both inputs (an empty sha256 cache)",
    "command": "the `neon-merge` command, hashing both inputs, start-up and torch import included",
    "naive": "load both state dicts whole, (1+w)·r − w·s, save",
}
HASHING = ("neon-merge-hashing", "command")  # run with the cache of digests emptied
BEFORE = " (before)"  # the same method, run with --before's neon_steps
ITEMSIZE = {"float32": 4, "mask": 4, "bfloat16": 2, "int64": 8, "bool": 1}
READ_CHUNK = 8 << 20


# -- the synthetic pair -------------------------------------------------------------------------

def synthetic_layout(size_bytes: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of a transformer-like checkpoint of about `size_bytes`: fp32 and bf16
    weights, an fp32 embedding as the largest tensor (156 MiB), int64 and bool buffers, and fp32
    attention masks holding -inf ("mask")."""
    d = 2048 if size_bytes >= 10**9 else 256
    layout = [("embed.weight", "float32", (40_000 if d == 2048 else 4000, d // 2)),
              ("norm.num_batches_tracked", "int64", ())]
    block = [("attn.qkv.weight", "float32", (3 * d, d)), ("attn.qkv.bias", "float32", (3 * d,)),
             ("attn.proj.weight", "bfloat16", (d, d)), ("attn.mask", "mask", (512, 512)),
             ("attn.causal", "bool", (512, 512)), ("attn.position_ids", "int64", (512,)),
             ("mlp.fc1.weight", "bfloat16", (4 * d, d)), ("mlp.fc2.weight", "float32", (d, 4 * d)),
             ("norm.weight", "bfloat16", (d,)), ("norm.bias", "bfloat16", (d,))]
    i = 0
    while sum(nbytes(dtype, shape) for _, dtype, shape in layout) < size_bytes:
        layout += [(f"blocks.{i}.{name}", dtype, shape) for name, dtype, shape in block]
        i += 1
    return layout


def uniform_layout(size_bytes: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """fp32 tensors of 64 MiB, `size_bytes` in all (2 GiB: 32 of them)."""
    count = max(1, round(size_bytes / 2**26))
    return [(f"blocks.{i}.weight", "float32", (4096, 4096)) for i in range(count)]


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * ITEMSIZE[dtype]


def write_pair(folder: Path, layout) -> tuple[Path, Path]:
    """base.safetensors and selftrained.safetensors (the base nudged), by the safetensors library."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)

    def make(dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
        if dtype == "mask":
            return torch.full(shape, float("-inf")).triu(1)
        if dtype == "bool":
            return torch.ones(shape, dtype=torch.bool).tril()
        if dtype == "int64":
            return torch.arange(math.prod(shape)).reshape(shape)
        return torch.empty(shape).uniform_(-0.1, 0.1, generator=generator).to(getattr(torch, dtype))

    tensors = {name: make(dtype, shape) for name, dtype, shape in layout}
    base, selftrained = folder / "base.safetensors", folder / "selftrained.safetensors"
    save_file(tensors, base)
    for name, dtype, _ in layout:
        if dtype in ("float32", "bfloat16"):
            tensors[name].mul_(0.99).add_(1e-3)
    save_file(tensors, selftrained)
    return base, selftrained


# -- the methods, each run in its own process ---------------------------------------------------

def run_method(method: str, base: Path, selftrained: Path, out: Path, w: float, source: Path) -> None:
    sys.path.insert(0, str(source))  # this checkout's neon_steps, or --before's
    if method not in ("floor", "command"):  # imports before the clock starts, but for the command's
        from safetensors.torch import load_file, save_file
        from neon_steps.merge import merge_checkpoints
    start, times = time.perf_counter(), os.times()
    if method == "floor":
        copy_floor(base, selftrained, out)
    elif method in ("neon-merge", "neon-merge-hashing"):
        merge_checkpoints(base, selftrained, [w], [out])
    elif method == "command":
        from neon_steps.cli import main
        main([str(base), str(selftrained), "--w", str(w), "--out", str(out)])
    elif method == "naive":
        r, s = load_file(base), load_file(selftrained)
        save_file({k: (1 + w) * r[k] - w * s[k] if r[k].is_floating_point() else r[k] for k in r}, out)
        fsync(out)
    seconds, after = time.perf_counter() - start, os.times()
    print(json.dumps({"seconds": seconds, "user_s": after.user - times.user, "sys_s": after.system - times.system,
                      "peak_rss_mb": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the forked parent."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def copy_floor(base: Path, selftrained: Path, out: Path) -> None:
    """The I/O no merge avoids: both inputs read, as many bytes written (by the kernel, with
    sendfile, which is faster than a copy loop through a buffer), then fsynced."""
    warm(selftrained)
    shutil.copyfile(base, out)
    fsync(out)


def fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def warm(*paths: Path) -> None:
    buffer = memoryview(bytearray(READ_CHUNK))
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def measure(method: str, base: Path, selftrained: Path, out: Path, w: float, hash_cache: Path,
            before: Path | None) -> dict:
    out.unlink(missing_ok=True)
    source = before if method.endswith(BEFORE) else REPO
    method = method.removesuffix(BEFORE)
    if method in HASHING:
        shutil.rmtree(hash_cache, ignore_errors=True)
    elif method == "neon-merge":
        cache_hashes(hash_cache, base, selftrained)
    os.sync()  # the previous run's writeback does not land on this one
    warm(base, selftrained)
    load = os.getloadavg()[0]
    env = {**os.environ, "NEON_HASH_CACHE": str(hash_cache)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--method", method, str(base), str(selftrained), str(out),
                           "--w", str(w), "--source", str(source)], capture_output=True, text=True, check=True,
                          env=env, cwd=source)
    process_seconds = time.perf_counter() - started
    out.unlink(missing_ok=True)
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_seconds": process_seconds, "load": load}


def cache_hashes(hash_cache: Path, *paths: Path) -> None:
    """The digests of the inputs in the cache, as a merge after the first of a search finds them."""
    os.environ["NEON_HASH_CACHE"] = str(hash_cache)
    from neon_steps import filehash

    for _ in range(10):
        for path in paths:
            filehash.sha256_files([path])
        if len(list(hash_cache.glob("*.json"))) == len(paths):
            return
        time.sleep(1)  # written a moment ago: not kept yet (filehash.RACY_NS)
    sys.exit(f"the digests of {', '.join(map(str, paths))} are not kept in {hash_cache}")


# -- the report ---------------------------------------------------------------------------------

def benchmark(folder: Path, size_gb: float, repeat: int, w: float, layout_name: str, methods: list[str],
              before: Path | None = None, before_label: str = "") -> dict:
    make_layout = uniform_layout if layout_name == "uniform" else synthetic_layout
    layout = make_layout(int(size_gb * (2**30 if layout_name == "uniform" else 10**9)))
    base, selftrained = write_pair(folder, layout)
    largest = max(nbytes(dtype, shape) for _, dtype, shape in layout) / 2**20
    uptime = _uptime()
    runs = {method: [] for method in methods}
    for _ in range(repeat):  # methods take turns, so a busy spell on a shared machine hits all of them
        for method in methods:
            runs[method].append(measure(method, base, selftrained, folder / "out.safetensors", w,
                                        folder / "hash-cache", before))
    best = {method: {**min(rs, key=lambda r: r["seconds"]), "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                     "all_seconds": [r["seconds"] for r in rs]}
            for method, rs in runs.items()}
    floor, idle = best["floor"]["seconds"], best["idle"]["peak_rss_mb"]
    what = {**METHODS, **{m + BEFORE: f"{METHODS[m]}: the code of {before_label or before}" for m in METHODS}}
    rows = [{"method": m, "what": what[m], **best[m],
             "x_floor": best[m]["seconds"] / floor if m != "idle" else None,
             "rss_above_idle_mb": best[m]["peak_rss_mb"] - idle if m not in ("idle", "floor") else None}
            for m in methods]
    loads = [r["load"] for rs in runs.values() for r in rs]
    options = f" --layout {layout_name}" if layout_name != "transformer" else ""
    options += f" --before {before} --before-label {before_label}" if before else ""
    return {
        "command": f"python benchmarks/merge/run.py{options} --size-gb {size_gb:g} --repeat {repeat}",
        "inputs": {"layout": layout_name, "bytes_each": base.stat().st_size, "tensors": len(layout),
                   "largest_tensor_mib": largest},
        "w": w, "repeat": repeat, "rows": rows,
        "targets": {f"time_x_floor ({m})": {"target": 1.5, "measured": best[m]["seconds"] / floor}
                    for m in ("neon-merge", "neon-merge-hashing") if m in best}
                   | {f"rss_above_idle_mib ({m})": {"target": 2 * largest + 300,
                                                   "measured": best[m]["peak_rss_mb"] - idle}
                      for m in ("neon-merge",) if m in best},
        "machine": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "uptime_before": uptime,
                    "uptime_after": _uptime(), "load_average_before_runs": [min(loads), max(loads)],
                    "python": platform.python_version(), "torch": _torch_version()},
    }


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")


def _torch_version() -> str:
    import torch
    return torch.__version__


def markdown(result: dict) -> str:
    inputs, machine, targets = result["inputs"], result["machine"], result["targets"]
    low, high = machine["load_average_before_runs"]
    lines = [f"`{result['command']}`: two {inputs['bytes_each'] / 1e9:.2f} GB safetensors inputs, {inputs['tensors']} "
             f"tensors, largest {inputs['largest_tensor_mib']:.0f} MiB, w = {result['w']:g}. {machine['cpus']} CPUs "
             f"({machine['cpu']}; 1-minute load average {low:.2f}–{high:.2f} before the runs; `uptime` before: "
             f"{machine['uptime_before']}), Python {machine['python']}, torch {machine['torch']}; best of "
             f"{result['repeat']} runs.",
             "",
             "| method | what it does | wall s | × floor | user s | sys s | process s | peak RSS MiB "
             "| RSS above idle MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['what']} | {_cell(r['seconds'] if r['x_floor'] else None, '.2f')} "
              f"| {_cell(r['x_floor'], '.2f')} | {_cell(r['user_s'] if r['x_floor'] else None, '.2f')} "
              f"| {_cell(r['sys_s'] if r['x_floor'] else None, '.2f')} | {r['process_seconds']:.2f} "
              f"| {r['peak_rss_mb']:.0f} | {_cell(r['rss_above_idle_mb'], '.0f')} |"
              for r in result["rows"]]
    lines += [""] + [f"Target {name}: ≤ {t['target']:g}: {t['measured']:.2f}." for name, t in targets.items()]
    return "\n".join(lines)


def _cell(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each input (default: 2)")
    parser.add_argument("--dir", type=Path, help="where to put the synthetic files (default: the temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best time counts (default: 3)")
    parser.add_argument("--w", type=float, default=1.5)
    parser.add_argument("--layout", choices=("transformer", "uniform"), default="transformer",
                        help="transformer: mixed dtypes and buffers (default); uniform: fp32 tensors of 64 MiB")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="which to run (idle and floor always are)")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also time the hashing merge and the command with the neon_steps in DIR, in the "
                             "same turns (e.g. git archive <commit> neon_steps | tar -x -C DIR)")
    parser.add_argument("--before-label", default="", help="what DIR holds, for the table (e.g. a commit)")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="where to write the results")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, default=REPO, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        run_method(args.method, *args.paths, args.w, args.source)
        return
    parent = args.dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    needed = 3.3 * args.size_gb * 2**30  # two inputs and one output
    if shutil.disk_usage(parent).free < needed:
        sys.exit(f"need {needed / 1e9:.1f} GB free in {parent}")
    folder = Path(tempfile.mkdtemp(prefix="neon-merge-bench-", dir=parent))
    try:
        chosen = [m for m in METHODS if m in ("idle", "floor") or m in args.methods]
        methods = [variant for m in chosen for variant in ([m, m + BEFORE] if args.before and m in HASHING else [m])]
        result = benchmark(folder, args.size_gb, args.repeat, args.w, args.layout, methods,
                           args.before and args.before.resolve(), args.before_label)
    finally:
        shutil.rmtree(folder)
    print(markdown(result))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

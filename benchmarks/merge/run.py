"""Time the streaming merge against the I/O floor and the naive merge on a synthetic checkpoint pair.

    python benchmarks/merge/run.py --size-gb 2

Each method runs in a fresh process that reports its own wall time (imports excluded) and peak
RSS. Before each run both inputs are read once, so every method starts from the same warm page
cache (dropping it needs root), and every method fsyncs its output. Methods take turns, and the
best time of --repeat runs counts. See README.md for what the rows mean.
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
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing

METHODS = {
    "idle": "Python with torch and neon_steps.merge imported, nothing done",
    "floor": "read both inputs, copy the base's bytes to the output (sendfile), no arithmetic",
    "neon-merge": "`merge_checkpoints`: streamed, both inputs hashed",
    "naive": "load both state dicts whole, (1+w)·r − w·s, save",
}
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

def run_method(method: str, base: Path, selftrained: Path, out: Path, w: float) -> None:
    if method != "floor":  # the floor needs no torch; the others import it before the clock starts
        from safetensors.torch import load_file, save_file
        from neon_steps.merge import merge_checkpoints
    start = time.perf_counter()
    if method == "floor":
        copy_floor(base, selftrained, out)
    elif method == "neon-merge":
        merge_checkpoints(base, selftrained, [w], [out])
    elif method == "naive":
        r, s = load_file(base), load_file(selftrained)
        save_file({k: (1 + w) * r[k] - w * s[k] if r[k].is_floating_point() else r[k] for k in r}, out)
        fsync(out)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mib()}))


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


def measure(method: str, base: Path, selftrained: Path, out: Path, w: float) -> dict:
    out.unlink(missing_ok=True)
    os.sync()  # the previous run's writeback does not land on this one
    warm(base, selftrained)
    proc = subprocess.run([sys.executable, __file__, "--method", method, str(base), str(selftrained), str(out),
                           "--w", str(w)], capture_output=True, text=True, check=True)
    out.unlink(missing_ok=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the report ---------------------------------------------------------------------------------

def benchmark(folder: Path, size_gb: float, repeat: int, w: float) -> dict:
    layout = synthetic_layout(int(size_gb * 10**9))
    base, selftrained = write_pair(folder, layout)
    largest = max(nbytes(dtype, shape) for _, dtype, shape in layout) / 2**20
    load = os.getloadavg()[0]
    runs = {method: [] for method in METHODS}
    for _ in range(repeat):  # methods take turns, so a busy spell on a shared machine hits all of them
        for method in METHODS:
            runs[method].append(measure(method, base, selftrained, folder / "out.safetensors", w))
    best = {method: {"seconds": min(r["seconds"] for r in rs), "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
            for method, rs in runs.items()}
    floor, idle, merge = best["floor"]["seconds"], best["idle"]["peak_rss_mb"], best["neon-merge"]
    rows = [{"method": m, "what": METHODS[m], **best[m],
             "x_floor": best[m]["seconds"] / floor if m != "idle" else None,
             "rss_above_idle_mb": best[m]["peak_rss_mb"] - idle if m not in ("idle", "floor") else None}
            for m in METHODS]
    return {
        "command": f"python benchmarks/merge/run.py --size-gb {size_gb:g} --repeat {repeat}",
        "inputs": {"bytes_each": base.stat().st_size, "tensors": len(layout), "largest_tensor_mib": largest},
        "w": w, "repeat": repeat, "rows": rows,
        "targets": {"time_x_floor": {"target": 1.5, "measured": merge["seconds"] / floor},
                    "rss_above_idle_mib": {"target": 2 * largest + 300, "measured": merge["peak_rss_mb"] - idle}},
        "machine": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "load_average_before": load,
                    "python": platform.python_version(), "torch": _torch_version()},
    }


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")


def _torch_version() -> str:
    import torch
    return torch.__version__


def markdown(result: dict) -> str:
    inputs, machine, targets = result["inputs"], result["machine"], result["targets"]
    time_x, rss = targets["time_x_floor"], targets["rss_above_idle_mib"]
    lines = [f"`{result['command']}`: two {inputs['bytes_each'] / 1e9:.2f} GB safetensors inputs, {inputs['tensors']} "
             f"tensors, largest {inputs['largest_tensor_mib']:.0f} MiB, w = {result['w']:g}. {machine['cpus']} CPUs "
             f"({machine['cpu']}, load average {machine['load_average_before']:.1f} before the run), "
             f"Python {machine['python']}, torch {machine['torch']}; best of {result['repeat']} runs.",
             "",
             "| method | what it does | wall s | × floor | peak RSS MiB | RSS above idle MiB |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['what']} | {_cell(r['seconds'] if r['x_floor'] else None, '.2f')} "
              f"| {_cell(r['x_floor'], '.2f')} | {r['peak_rss_mb']:.0f} | {_cell(r['rss_above_idle_mb'], '.0f')} |"
              for r in result["rows"]]
    lines += ["", f"Targets: wall time ≤ {time_x['target']}× the floor: {time_x['measured']:.2f}×; "
                  f"RSS above idle ≤ 2 × largest tensor + 300 MiB = {rss['target']:.0f} MiB: "
                  f"{rss['measured']:.0f} MiB."]
    return "\n".join(lines)


def _cell(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each input (default: 2)")
    parser.add_argument("--dir", type=Path, help="where to put the synthetic files (default: the temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best time counts (default: 3)")
    parser.add_argument("--w", type=float, default=1.5)
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="where to write the results")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        run_method(args.method, *args.paths, args.w)
        return
    parent = args.dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    needed = 3.2 * args.size_gb * 10**9  # two inputs and one output
    if shutil.disk_usage(parent).free < needed:
        sys.exit(f"need {needed / 1e9:.1f} GB free in {parent}")
    folder = Path(tempfile.mkdtemp(prefix="neon-merge-bench-", dir=parent))
    try:
        result = benchmark(folder, args.size_gb, args.repeat, args.w)
    finally:
        shutil.rmtree(folder)
    print(markdown(result))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

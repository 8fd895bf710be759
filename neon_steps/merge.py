"""Stage `merge`: Neon's extrapolation θ_neon = θ_r − w·(θ_s − θ_r) = (1 + w)·θ_r − w·θ_s.

θ_r is the base, θ_s the base fine-tuned on its own samples. w > 0 moves away from θ_s (Neon);
w = 0 is the base and w = −1 is θ_s, bit for bit. Learned floating-point tensors are merged
(fp16 and bf16 computed in fp32); integer and bool tensors, tensors holding inf or NaN in either
input, and the names the caller keeps are copied from the base. Tensors stream one at a time, so
memory is about two of the largest tensor whatever the model's size, and several w share one pass.
"""
import argparse
import contextlib
import fnmatch
import hashlib
import json
import math
import mmap
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from neon_steps import stage
from neon_steps.checkpoints import Checkpoint, MergeError, SafetensorsWriter, TensorSpec, open_checkpoint
from neon_steps.config import fmt
from neon_steps.io import atomic_path
from neon_steps.models import load_adapter

DEFAULT_SHARD_SIZE = 5 * 10**9  # bytes of tensor data per output file (Hugging Face's "5GB")
CHUNK_BYTES = 8 << 20           # merged tensors are computed and written this much at a time
HASH_CHUNK_BYTES = 8 << 20
LERP_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # lerp computes fp16/bf16 in fp32
UNHASHED = "0" * 64             # the header's placeholder until the hashes are known

__all__ = ["MergeError", "MergeReport", "MergeRule", "merge_checkpoints", "merge_state_dicts", "main"]


# -- the rule, one tensor at a time -------------------------------------------------------------

@dataclass(frozen=True)
class MergeRule:
    """Which tensors are merged: floating-point ones, finite in both inputs, neither excluded by a
    glob nor kept by the `keep_base` predicate. The others are copied from the base."""

    exclude: tuple[str, ...] = ()
    keep_base: Callable[[str], bool] | None = None

    def merges(self, name: str, base: torch.Tensor, selftrained: torch.Tensor) -> bool:
        return (base.is_floating_point()
                and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)
                and not (self.keep_base and self.keep_base(name))
                and all_finite(base) and all_finite(selftrained))


def all_finite(tensor: torch.Tensor) -> bool:
    """No inf or NaN. One pass, no temporary: aminmax propagates NaN and finds ±inf at its ends."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor if tensor.dtype in LERP_DTYPES else tensor.float())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def merge_into(out: torch.Tensor, base: torch.Tensor, selftrained: torch.Tensor, w: float, name: str) -> torch.Tensor:
    """out ← base + w·(base − selftrained), rounded once to out's dtype; w = 0 and w = −1 copy
    their input (the arithmetic would turn −0.0 into +0.0). Raises if the result is not finite."""
    if w == 0:
        out.copy_(base)
    elif w == -1:
        out.copy_(selftrained)
    elif out.dtype in LERP_DTYPES:
        torch.lerp(base, selftrained, -w, out=out)
    else:  # float8
        out.copy_(torch.lerp(base.float(), selftrained.float(), -w))
    if not all_finite(out):
        raise MergeError(f"merged tensor {name!r} is not finite at w={fmt(w)} ({_name(out.dtype)} overflow); "
                         f"exclude it or use a smaller |w|")
    return out


def check_same_layout(base: Mapping[str, TensorSpec], selftrained: Mapping[str, TensorSpec],
                      base_name: str = "base", selftrained_name: str = "selftrained") -> None:
    """Both inputs hold the same names with the same shapes and dtypes; else the first few differences."""
    common = [name for name in base if name in selftrained]
    differences = {
        f"only in {base_name}": [repr(name) for name in base if name not in selftrained],
        f"only in {selftrained_name}": [repr(name) for name in selftrained if name not in base],
        "shapes differ": [f"{name!r} {list(base[name].shape)} vs {list(selftrained[name].shape)}"
                          for name in common if base[name].shape != selftrained[name].shape],
        "dtypes differ": [f"{name!r} {_name(base[name].dtype)} vs {_name(selftrained[name].dtype)}"
                          for name in common if base[name].dtype != selftrained[name].dtype],
    }
    if problems := [f"{what}: {_first_few(items)}" for what, items in differences.items() if items]:
        raise MergeError(f"{base_name} and {selftrained_name} do not match: {'; '.join(problems)}")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_few(items: list[str], few: int = 3) -> str:
    return ", ".join(items[:few]) + (f" and {len(items) - few} more" if len(items) > few else "")


def merge_state_dicts(base: Mapping[str, torch.Tensor], selftrained: Mapping[str, torch.Tensor], w: float,
                      keep_base: Callable[[str], bool] | None = None,
                      exclude: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """θ_r − w·(θ_s − θ_r) of two in-memory state dicts, by `merge_checkpoints`' rule; the tensors
    it does not merge are the base's own objects."""
    check_same_layout({k: TensorSpec.of(t) for k, t in base.items()},
                      {k: TensorSpec.of(t) for k, t in selftrained.items()})
    _check_w(w)
    rule, merged = MergeRule(tuple(exclude), keep_base), {}
    for name, r in base.items():
        s = selftrained[name]
        merged[name] = merge_into(torch.empty_like(r), r, s, w, name) if rule.merges(name, r, s) else r
    return merged


def _check_w(w: float) -> None:
    if not math.isfinite(w):
        raise MergeError(f"w must be a finite number, got {w}")


# -- streaming checkpoints ----------------------------------------------------------------------

@dataclass(frozen=True)
class MergeReport:
    """One output of a merge."""

    w: float
    out: Path
    files: tuple[Path, ...]  # the file written; or the shards, then their index
    merged: int              # tensors merged
    copied: tuple[str, ...]  # tensors copied from the base

    def summary(self) -> str:
        where = self.out if len(self.files) == 1 else f"{len(self.files) - 1} shards indexed by {self.files[-1]}"
        return f"w={fmt(self.w)}: {where}; merged {self.merged} tensors, copied {len(self.copied)} from the base"


class _Output:
    """One merged checkpoint, written to temporary files that take its paths only when the whole
    merge has succeeded."""

    def __init__(self, out: Path, w: float, shards: list[dict[str, TensorSpec]], stack: contextlib.ExitStack,
                 metadata: Mapping[str, str]):
        self.out, self.w, self.shards = out, w, shards
        self.files, self.index = _output_paths(out, len(shards))
        # The index enters first to leave last: once it exists, its shards are whole.
        self._index_tmp = stack.enter_context(atomic_path(self.index)) if self.index else None
        self._writers = [stack.enter_context(SafetensorsWriter(stack.enter_context(atomic_path(path)), specs, metadata))
                         for path, specs in zip(self.files, shards)]
        self._writer_of = {name: writer for writer in self._writers for name in writer.specs}

    def write(self, name: str, data: torch.Tensor) -> None:
        self._writer_of[name].write(data)

    def sync(self) -> None:
        for writer in self._writers:
            writer.sync()

    def finish(self, metadata: Mapping[str, str]) -> list[Path]:
        """Write the final metadata (and the index); the paths the output will take."""
        for writer in self._writers:
            writer.finish(metadata)
        if self._index_tmp:
            total = sum(spec.nbytes for shard in self.shards for spec in shard.values())
            weight_map = {name: path.name for path, shard in zip(self.files, self.shards) for name in shard}
            self._index_tmp.write_text(json.dumps({"metadata": {"total_size": total, **metadata},
                                                   "weight_map": weight_map}, indent=2) + "\n")
        return self.files + ([self.index] if self.index else [])


def _output_paths(out: Path, shards: int) -> tuple[list[Path], Path | None]:
    """`out` itself; or, for several shards, Hugging Face's names beside it and their index."""
    if shards == 1:
        return [out], None
    stem = out.name.removesuffix(".safetensors")
    return ([out.with_name(f"{stem}-{i:05d}-of-{shards:05d}.safetensors") for i in range(1, shards + 1)],
            out.with_name(f"{out.name}.index.json"))


def merge_checkpoints(base: str | Path, selftrained: str | Path, ws: Sequence[float], outs: Sequence[str | Path], *,
                      key: str | None = None, exclude: Iterable[str] = (),
                      keep_base: Callable[[str], bool] | None = None,
                      allow_pickle: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                      extra_metadata: Mapping[str, object] | None = None) -> list[MergeReport]:
    """Write θ_r − w·(θ_s − θ_r) for each w of `ws` to the .safetensors path of `outs` at the same
    position, reading each input once. Above `shard_size` bytes an output is split into
    `<stem>-0000k-of-0000n.safetensors` beside it, indexed by `<out>.index.json`. `key` picks the
    weights inside PyTorch checkpoints (e.g. `ema` or `model.state_dict`). The outputs' metadata
    holds w, the inputs' paths and the sha256 of their files' bytes (a sharded input: its index,
    then its shards, end to end). Nothing is written unless every output is whole."""
    targets = _targets(ws, outs, shard_size)
    rule = MergeRule(tuple(exclude), keep_base)
    extra = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra_metadata or {}).items()}
    with open_checkpoint(base, key, allow_pickle) as r, open_checkpoint(selftrained, key, allow_pickle) as s:
        check_same_layout(r.specs, s.specs, str(r.path), str(s.path))
        shards = _shards(_write_order(r.specs), shard_size)
        _refuse_overwriting([out for _, out in targets], len(shards), r.files + s.files)

        def metadata(w: float, hashes: list[str]) -> dict[str, str]:
            return {"format": "pt", **r.metadata, **extra, "w": fmt(w), "base": str(r.path), "base_sha256": hashes[0],
                    "selftrained": str(s.path), "selftrained_sha256": hashes[1]}

        stop_hashing = threading.Event()
        with (_torch_threads(max(1, torch.get_num_threads() - 2)), ThreadPoolExecutor(max_workers=2) as pool,
              contextlib.ExitStack() as stack):
            stack.callback(stop_hashing.set)  # after an error, do not wait for the hashes
            hashing = [pool.submit(_sha256, checkpoint.files, stop_hashing) for checkpoint in (r, s)]
            outputs = [_Output(out, w, shards, stack, metadata(w, [UNHASHED] * 2)) for w, out in targets]
            copied = _stream(r, s, [name for shard in shards for name in shard], outputs, rule)
            for output in outputs:
                output.sync()  # the disk writes while the hashes finish; the last fsync is then short
            hashes = [future.result() for future in hashing]
            written = [output.finish(metadata(output.w, hashes)) for output in outputs]
    return [MergeReport(w, out, tuple(files), len(r.specs) - len(copied), tuple(copied))
            for (w, out), files in zip(targets, written)]


def _targets(ws: Sequence[float], outs: Sequence[str | Path], shard_size: int) -> list[tuple[float, Path]]:
    ws, outs = [float(w) for w in ws], [Path(out) for out in outs]
    if not ws or len(ws) != len(outs):
        raise MergeError(f"{len(ws)} values of w but {len(outs)} outputs; give one output per w")
    for w in ws:
        _check_w(w)
    if bad := [out for out in outs if out.suffix != ".safetensors"]:
        raise MergeError(f"output {bad[0]}: the name must end in .safetensors")
    if len({out.resolve() for out in outs}) < len(outs):
        raise MergeError(f"the same output is given twice: {', '.join(map(str, outs))}")
    if shard_size <= 0:
        raise MergeError(f"shard size must be positive, got {shard_size}")
    return list(zip(ws, outs))


def _write_order(specs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
    """The base's order, wider elements first, so that every tensor starts aligned to its element
    size (as the safetensors library lays files out)."""
    return dict(sorted(specs.items(), key=lambda item: -item[1].dtype.itemsize))


def _shards(specs: Mapping[str, TensorSpec], shard_size: int) -> list[dict[str, TensorSpec]]:
    """Consecutive groups of at most `shard_size` bytes (a larger tensor alone), as Hugging Face's."""
    shards, size = [{}], 0
    for name, spec in specs.items():
        if shards[-1] and size + spec.nbytes > shard_size:
            shards, size = shards + [{}], 0
        shards[-1][name] = spec
        size += spec.nbytes
    return shards


def _refuse_overwriting(outs: list[Path], shards: int, inputs: list[Path]) -> None:
    taken = {path.resolve() for path in inputs}
    for out in outs:
        files, index = _output_paths(out, shards)
        for path in (files + [index]) if index else files:
            if path.resolve() in taken:
                raise MergeError(f"output {path} is one of the inputs; choose another path")


def _stream(base: Checkpoint, selftrained: Checkpoint, names: list[str], outputs: list[_Output],
            rule: MergeRule) -> list[str]:
    """Read each tensor once, write it merged (chunk by chunk) to every output; the names copied."""
    scratch, copied = torch.empty(CHUNK_BYTES, dtype=torch.uint8), []
    for name in names:
        r, s = base.read(name), selftrained.read(name)
        if not rule.merges(name, r, s):
            copied.append(name)
            for output in outputs:
                output.write(name, r)
            continue
        step = CHUNK_BYTES // r.element_size()
        for r_part, s_part in zip(r.reshape(-1).split(step), s.reshape(-1).split(step)):
            merged = scratch[:r_part.nbytes].view(r.dtype)
            for output in outputs:
                output.write(name, merge_into(merged, r_part, s_part, output.w, name))
    return copied


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Fewer intra-op threads while two cores hash: oversubscribed OpenMP teams stall on every
    operation (a 2-core machine ran 6× slower), and the streaming arithmetic is memory-bound."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sha256(files: list[Path], stop: threading.Event) -> str:
    """The sha256 of the files' bytes end to end, computed beside the merge (hashlib releases the
    GIL) from a mapping whose pages leave the process as they are hashed."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as pages:
            for start in range(0, len(pages), HASH_CHUNK_BYTES):
                if stop.is_set():
                    break
                with memoryview(pages)[start:start + HASH_CHUNK_BYTES] as chunk:
                    digest.update(chunk)
                pages.madvise(mmap.MADV_DONTNEED, start, min(HASH_CHUNK_BYTES, len(pages) - start))
    return digest.hexdigest()


# -- command line and Snakemake -----------------------------------------------------------------

EPILOG = """\
sign convention: θ_neon = θ_r − w·(θ_s − θ_r), θ_r = BASE, θ_s = SELF_TRAINED.
  w > 0       extrapolates away from SELF_TRAINED (Neon)
  w = 0       writes BASE, bit for bit
  −1 < w < 0  interpolates toward SELF_TRAINED
  w = −1      writes SELF_TRAINED, bit for bit

Floating-point tensors are merged (fp16/bf16 computed in fp32); integer and bool tensors, tensors
holding inf or NaN, and --exclude'd names are copied from BASE.

examples:
  neon-merge base.safetensors selftrained.safetensors --w 1.5 --out neon.safetensors
  neon-merge base.pt selftrained.pt --key ema --w 0.5 1 2 --out neon_w{w}.safetensors
"""


def _size(text: str) -> int:
    """Bytes from `5GB`, `500MB`, `2GiB` or a plain number."""
    match = re.fullmatch(r"([0-9.e+]+)\s*(?:([kmgt])(i?)b?)?", text.strip().lower())
    try:
        number = float(match[1])
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MB, 2GiB)") from None
    power = "kmgt".index(match[2]) + 1 if match[2] else 0
    return int(number * (1024 if match[3] else 1000) ** power)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neon-merge", usage="%(prog)s BASE SELF_TRAINED --w W [W ...] --out OUT [OUT ...] [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Neon merge θ_r − w·(θ_s − θ_r) of two checkpoints, streamed tensor by tensor.")
    parser.add_argument("base", metavar="BASE",
                        help="θ_r: .safetensors, a safetensors index or folder, .pt/.pth/.bin/.ckpt, .pkl")
    parser.add_argument("selftrained", metavar="SELF_TRAINED", help="θ_s, the base fine-tuned on its own samples")
    parser.add_argument("--w", type=float, nargs="+", required=True, help="one or more merge weights")
    parser.add_argument("--out", nargs="+", required=True,
                        help="output .safetensors, one per w, or one with a {w} placeholder "
                             "(neon_w{w}.safetensors; w spelled 1, 0.5, -0.25)")
    parser.add_argument("--key", help="where the weights sit in a .pt/.pkl: ema, model.state_dict, ...")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="copy tensors whose names match from BASE (repeatable)")
    parser.add_argument("--shard-size", type=_size, default=DEFAULT_SHARD_SIZE, metavar="SIZE",
                        help="split outputs above this many bytes (default: 5GB)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load pickles that run code (.pkl, or .pt refused by weights_only): trusted files only")
    return parser


def _outputs_for(outs: list[str], ws: list[float]) -> list[str]:
    if len(outs) == 1 and len(ws) > 1:
        if "{w}" not in outs[0]:
            raise MergeError(f"{len(ws)} values of --w need one --out per w or a {{w}} placeholder in --out")
        outs = outs * len(ws)
    if len(outs) != len(ws):
        raise MergeError(f"{len(ws)} values of --w but {len(outs)} of --out")
    return [out.replace("{w}", fmt(w)) for out, w in zip(outs, ws)]


def _log(reports: list[MergeReport]) -> None:
    for report in reports:
        print(f"merge: {report.summary()}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _log(merge_checkpoints(args.base, args.selftrained, args.w, _outputs_for(args.out, args.w), key=args.key,
                               exclude=args.exclude, allow_pickle=args.allow_pickle, shard_size=args.shard_size))
    except (MergeError, OSError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return 0


def mergeable_names(base: str, model: Mapping) -> Callable[[str], bool]:
    """Which tensors are learned parameters (buffers stay the base's): as the base's metadata
    lists them (the `base` rule writes it), else as the model's adapter says. The metadata
    spares a merge job the model's imports and network (seconds for a diffusers UNet)."""
    from neon_steps.io import load_metadata

    listed = load_metadata(base).get("mergeable")
    if listed is not None:
        return set(json.loads(listed)).__contains__
    return load_adapter(model).mergeable


def _run_from_snakemake(smk) -> None:
    def run() -> None:
        # Inside the log's context, so that a config mistake the adapter finds is one line.
        mergeable = mergeable_names(smk.input.base, smk.params.model)
        _log(merge_checkpoints(smk.input.base, smk.input.selftrained, smk.params.w, list(smk.output),
                               exclude=smk.params.get("exclude", []), keep_base=lambda name: not mergeable(name)))

    stage.run_snakemake(smk, run)


if __name__ == "__main__":
    if "snakemake" in globals():
        _run_from_snakemake(snakemake)  # noqa: F821
    else:
        sys.exit(main())

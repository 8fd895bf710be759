"""Stage `merge` and the engine behind neon-merge: Neon's extrapolation (neon_steps.extrapolation)
of two checkpoints, streamed tensor by tensor, so that memory is about two of the largest tensor
whatever the model's size, and several w share one pass over the inputs.
"""
import contextlib
import hashlib
import json
import mmap
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from neon_steps.checkpoints import Checkpoint, SafetensorsWriter, TensorSpec, open_checkpoint
from neon_steps.config import fmt
from neon_steps.errors import MergeError
from neon_steps.extrapolation import MergeRule, check_same_layout, check_w, merge_into
from neon_steps.io import atomic_path, load_metadata
from neon_steps.models import load_adapter

DEFAULT_SHARD_SIZE = 5 * 10**9  # bytes of tensor data per output file (Hugging Face's "5GB")
CHUNK_BYTES = 8 << 20           # merged tensors are computed and written this much at a time
HASH_CHUNK_BYTES = 8 << 20
UNHASHED = "0" * 64             # the header's placeholder until the hashes are known


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
        check_w(w)
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


# -- the workflow's merge -----------------------------------------------------------------------

def mergeable_names(base: str, model: Mapping) -> Callable[[str], bool]:
    """Which tensors are learned parameters (buffers stay the base's): as the base's metadata
    lists them (the `prepare_base` rule writes it), else as the model's adapter says. The metadata
    spares a merge job the model's imports and network (seconds for a diffusers UNet)."""
    listed = load_metadata(base).get("mergeable")
    if listed is not None:
        return set(json.loads(listed)).__contains__
    return load_adapter(model).mergeable




def merge_point(model: Mapping, base: str, selftrained: str, ws: Sequence[float], outs: Sequence[str],
                exclude: Iterable[str] = ()) -> None:
    """The `merge` rule: θ at each w of `ws`, merging the model's learned parameters only."""
    mergeable = mergeable_names(base, model)
    for report in merge_checkpoints(base, selftrained, ws, outs, exclude=exclude,
                                    keep_base=lambda name: not mergeable(name)):
        print(f"merge: {report.summary()}", file=sys.stderr)


if __name__ == "__main__":  # `python -m neon_steps.merge`, as before neon-merge moved to neon_steps.cli
    from neon_steps.cli import main

    sys.exit(main())

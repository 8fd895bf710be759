"""Stage `merge` and the engine behind neon-merge: Neon's extrapolation (neon_steps.extrapolation)
of two checkpoints, streamed tensor by tensor, so that memory is about two of the largest tensor
whatever the model's size, and several w share one pass over the inputs.
"""
import contextlib
import functools
import json
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from neon_steps import filehash
from neon_steps.checkpoints import Checkpoint, SafetensorsWriter, TensorSpec, open_checkpoint
from neon_steps.config import fmt
from neon_steps.errors import MergeError
from neon_steps.extrapolation import MergeRule, all_finite, check_same_layout, check_w, lerp_into, overflow
from neon_steps.io import atomic_path, load_metadata
from neon_steps.models import load_adapter

DEFAULT_SHARD_SIZE = 5 * 10**9  # bytes of tensor data per output file (Hugging Face's "5GB"); cli.py's too
CHUNK_BYTES = 8 << 20           # merged tensors are computed and written this much at a time
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

    def writer(self, name: str) -> SafetensorsWriter:
        return self._writer_of[name]

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
        with contextlib.ExitStack() as stack:
            stack.callback(stop_hashing.set)  # after an error, do not wait for the hashes
            hashing = [filehash.sha256_files_async(checkpoint.files, stop_hashing) for checkpoint in (r, s)]
            outputs = [_Output(out, w, shards, stack, metadata(w, [UNHASHED] * 2)) for w, out in targets]
            # The cores: one writes (the kernel's copy into the page cache), one per input still
            # to hash, torch has the rest (at least one).
            hashers = sum(not future.done() for future in hashing)
            with (_torch_threads(max(1, torch.get_num_threads() - 1 - hashers)),
                  _WriteBehind(CHUNK_BYTES, 2 * len(outputs) + 1) as io):
                copied = _stream(r, s, [name for shard in shards for name in shard], outputs, rule, io)
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
            rule: MergeRule, io: "_WriteBehind") -> list[str]:
    """Read each tensor once, write it merged (chunk by chunk) to every output; the names copied.
    This thread computes, `io`'s writes: a chunk is merged while the previous one is written."""
    copied = []
    for name in names:
        r, s = base.read(name), selftrained.read(name)
        if not (rule.may_merge(name, r.dtype) and _merge_tensor(name, r, s, outputs, io)):
            copied.append(name)
            for output in outputs:
                writer = output.writer(name)
                io.submit(functools.partial(writer.write, r))
            io.drain()  # these writes read the mapping, whose pages the next read unmaps
    return copied


def _merge_tensor(name: str, r: torch.Tensor, s: torch.Tensor, outputs: list[_Output], io: "_WriteBehind") -> bool:
    """Write the merged tensor to every output; False where an input holds inf or NaN (the tensor
    is to be the base's). The inputs are not scanned for those first: a finite result says that
    both were finite (`lerp_into`), so only a result that is not finite has them looked at, and
    what was written of the tensor is then written again."""
    step = CHUNK_BYTES // r.element_size()
    for r_part, s_part in zip(r.reshape(-1).split(step), s.reshape(-1).split(step)):
        for output in outputs:
            buffer = io.buffer()
            merged = lerp_into(buffer[:r_part.nbytes].view(r.dtype), r_part, s_part, output.w)
            # at w = 0 (−1) the result is the base (θ_s) and says nothing of the other input
            unseen = s_part if output.w == 0 else r_part if output.w == -1 else None
            if not (all_finite(merged) and (unseen is None or all_finite(unseen))):
                io.give_back(buffer)
                if all_finite(r) and all_finite(s):
                    raise overflow(name, output.w, r.dtype)
                for every in outputs:
                    io.submit(functools.partial(every.writer(name).restart, name))
                return False
            io.submit(functools.partial(output.writer(name).write, merged), buffer)
    return True


class _WriteBehind:
    """A thread that does the outputs' writes, in the order given, while the caller computes:
    most of a merge's system time is the kernel copying what is written into the page cache. It
    lends `count` buffers of `nbytes` to compute into, each back once written."""

    def __init__(self, nbytes: int, count: int):
        self._jobs: queue.Queue = queue.Queue()
        self._free: queue.Queue = queue.Queue()
        for _ in range(count):
            self._free.put(torch.empty(nbytes, dtype=torch.uint8))
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="merge-writes", daemon=True)
        self._thread.start()

    def buffer(self) -> torch.Tensor:
        self._raise()
        return self._free.get()

    def give_back(self, buffer: torch.Tensor) -> None:
        self._free.put(buffer)

    def submit(self, write: Callable[[], object], buffer: torch.Tensor | None = None) -> None:
        """Do `write` after what was given before; `buffer` is free again once it is done."""
        self._raise()
        self._jobs.put((write, buffer))

    def drain(self) -> None:
        """Wait until everything given is written."""
        self._jobs.join()
        self._raise()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            write, buffer = job
            try:
                if self._error is None and not self._abandoned:
                    write()
            except BaseException as err:  # the caller raises it at its next call
                self._error = err
            finally:
                if buffer is not None:
                    self._free.put(buffer)
                self._jobs.task_done()
        self._jobs.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "_WriteBehind":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._abandoned = exc_type is not None  # after an error, the rest is not written
        self._jobs.put(None)
        self._thread.join()
        if exc_type is None:
            self._raise()


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Fewer intra-op threads while other threads hash and write: oversubscribed OpenMP teams
    stall on every operation (a 2-core machine ran 6× slower), and the streaming arithmetic is
    memory-bound."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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

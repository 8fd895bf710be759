"""Several processes of one job training together (torch.distributed): one per GPU of the node,
or, where the job sees no GPU, as many CPU processes talking over gloo (how the tests run it).

The job's own process starts its ranks, so a job runs the same locally and under SLURM (one task
holding G GPUs; no torchrun or srun). It holds the ranks' rendezvous store on a port the system
picks, so that jobs sharing a node never race for one. Rank r computes on cuda:r.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from neon_steps.errors import NeonError

HOST = "127.0.0.1"  # the ranks of a job share its node
# A rank's program: not `-m` (which would import this module twice, once as __main__), nor
# multiprocessing's spawn (which would run the rule's script, the job's __main__, again).
RANK_MAIN = "from neon_steps.distributed import run_rank; run_rank()"


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """The rank that writes files (rank 0; the only one without a process group)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the others: what it changes on disk (a stale resume point
    deleted) is what they then read."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def device() -> torch.device:
    from neon_steps.device import default_device

    if world_size() > 1 and torch.cuda.is_available():
        return torch.device("cuda", rank())
    return default_device()


def launch(ranks: int, function: Callable[..., Any], *args: Any) -> None:
    """Run `function(*args)` in `ranks` processes of one process group and wait for all of them;
    the first that fails stops the others and fails this call with its error (one line for a
    mistake). `function` must be importable (module level): each rank imports it anew, and `args`
    JSON (a stage's settings and paths): a rank reads its task as JSON, never a pickle. The
    ranks write to this process's stderr (a job's log) and split its torch threads."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    store = dist.TCPStore(HOST, 0, None, is_master=True, wait_for_workers=False)
    threads = max(1, torch.get_num_threads() // ranks)
    # The ranks import this neon_steps, whether installed or not (a rule's job puts it on the path).
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    print(f"{ranks} processes ({backend}) on this node", file=sys.stderr)
    sys.stderr.flush()  # before the ranks write to the same file
    log = _fd_of(sys.stderr)
    with tempfile.TemporaryDirectory(prefix="neon-ranks-") as errors:
        procs = []
        try:
            for r in range(ranks):
                task = {"function": f"{function.__module__}:{function.__qualname__}", "args": args, "rank": r,
                        "world_size": ranks, "port": store.port,
                        "backend": backend, "threads": threads, "parent": os.getpid(),
                        "error_file": os.path.join(errors, f"rank{r}.json")}
                proc = subprocess.Popen([sys.executable, "-c", RANK_MAIN], stdin=subprocess.PIPE, stdout=log,
                                        stderr=log, env=env)
                proc.stdin.write(json.dumps(task).encode())
                proc.stdin.close()
                procs.append(proc)
            failed = _wait_for_all(procs)
        finally:
            _stop(procs)
        if failed is not None:
            raise _failure(failed, procs[failed].returncode, errors)


def _wait_for_all(procs: list[subprocess.Popen]) -> int | None:
    """A rank that failed, as soon as one has; None when all have finished."""
    while True:
        codes = [proc.poll() for proc in procs]
        if failed := [r for r, code in enumerate(codes) if code not in (None, 0)]:
            return failed[0]
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Ranks still running (waiting on a rank that failed) are stopped, never left behind."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _failure(failed: int, returncode: int, errors: str) -> Exception:
    """The error of the rank that failed first (not of those that then lost it as a peer): its
    one line for a mistake."""
    reports = [json.loads(path.read_text()) for path in sorted(Path(errors).glob("rank*.json"))]
    first = [report for report in reports if not report["echo"]]
    if not first:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        return RuntimeError(f"rank {failed} of the job {how}")
    report = next((report for report in first if report["mistake"]), first[0])
    if report["mistake"]:
        return NeonError(report["line"])
    return RuntimeError(f"rank {report['rank']} of the job failed: {report['line']} (its traceback is in the log)")


def _fd_of(stream) -> int | None:
    """The file descriptor behind `stream`, for the ranks to write to; None: they inherit ours."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


# -- in a rank ------------------------------------------------------------------------------------
def run_rank() -> None:
    """A rank's process: its task from stdin, the process group joined, the task run."""
    task = json.load(sys.stdin.buffer)
    _exit_with(task["parent"])
    torch.set_num_threads(task["threads"])
    if task["backend"] == "nccl":
        torch.cuda.set_device(task["rank"])
    store = dist.TCPStore(HOST, task["port"], None, is_master=False)
    dist.init_process_group(task["backend"], store=store, rank=task["rank"], world_size=task["world_size"])
    try:
        module, name = task["function"].split(":")
        getattr(importlib.import_module(module), name)(*task["args"])
        dist.barrier()  # rank 0 has written its files: nobody leaves before
    except (NeonError, OSError) as err:
        line = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.filename else str(err)
        _report(task, line, mistake=True)
    except BaseException as err:  # a bug: its traceback in the log, its last line to the job
        if not _a_peer_failed(task):  # else this rank only lost that peer: its error says nothing new
            traceback.print_exc()
        _report(task, f"{type(err).__name__}: {err}", mistake=False)
    dist.destroy_process_group()


def _a_peer_failed(task: dict) -> bool:
    return any(Path(task["error_file"]).parent.glob("rank*.json"))


def _report(task: dict, line: str, mistake: bool) -> None:
    """Tell the job why this rank failed, and end it without waiting on peers that would wait for
    it forever. A peer's report comes first: it is written before that peer's connections close."""
    report = {"rank": task["rank"], "line": line, "mistake": mistake, "echo": _a_peer_failed(task)}
    Path(task["error_file"]).write_text(json.dumps(report))
    sys.stderr.flush()
    os._exit(1)


def _exit_with(parent: int) -> None:
    """End this rank when the job's process ends (killed with SIGKILL, it cannot stop its ranks)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()

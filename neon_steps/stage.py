"""The stage runner: what every rule's script (scripts/) shares. A script reads the `snakemake`
object and calls one library function through `run`, which gives torch the job's threads, logs to
the rule's log and turns a user mistake into one line."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable, Iterator

from neon_steps.errors import NeonError


@contextlib.contextmanager
def logged(log_path: str | None) -> Iterator[None]:
    """Send stdout/stderr (progress bars included) to the rule's log; exit 1 with one line on a
    user mistake."""
    stream = open(log_path, "a", buffering=1) if log_path else None
    saved = sys.stdout, sys.stderr
    if stream:
        sys.stdout = sys.stderr = stream
    start = time.time()
    try:
        yield
        print(f"done in {time.time() - start:.1f} s", file=sys.stderr)
    except (NeonError, OSError) as err:
        # A file that cannot be read or written is named, not traced back, as a mistake is.
        line = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.filename else err
        print(f"error: {line}", file=sys.stderr)
        if stream:  # and on the terminal, as well as in the log
            sys.stdout, sys.stderr = saved
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        sys.stdout, sys.stderr = saved
        if stream:
            stream.close()


def configure_torch(threads: int) -> None:
    """Use the job's threads: set now where the stage has imported torch, else through the
    variable torch's import reads, so that a torch-free stage (ckpt, a search round) never pays
    for that import."""
    threads = max(1, threads)
    if (torch := sys.modules.get("torch")) is not None:
        torch.set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def run(smk, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """`function(*args, **kwargs)` as the job of `smk` (the script's `snakemake` object)."""
    configure_torch(smk.threads)
    with logged(smk.log[0] if smk.log else None):
        function(*args, **kwargs)


def point(wildcards) -> dict[str, float]:
    """The (S, B, w, γ) a job's wildcards name, as numbers; w = 0 (the base) where none is named."""
    casts = {"S": int, "B": float, "w": float, "gamma": float}
    named = {key: cast(wildcards[key]) for key, cast in casts.items() if key in wildcards.keys()}
    named.setdefault("w", 0.0)
    return named


def by_role(named_inputs, *roles: str) -> dict[str, list[str]]:
    """A rule's named inputs gathered by role: `metrics` and every `metrics__<part>` (the files of
    one part, such as one search, given by its own input function) into one list, in order; a
    role no input has is an empty list."""
    gathered: dict[str, list[str]] = {role: [] for role in roles}
    for name, files in named_inputs.items():
        role = name.split("__")[0]
        if role not in gathered:
            raise KeyError(f"input {name!r}: not one of the roles {', '.join(roles)}")
        gathered[role].extend([files] if isinstance(files, str) else files)
    return gathered

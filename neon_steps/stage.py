"""What every stage script shares: run under Snakemake (a `snakemake` object) or from the
command line, log to the rule's log file, pick the device, turn user mistakes into one line."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from neon_steps import config as neon_config, user_files


class NeonError(Exception):
    """A user mistake (a missing file, a bad value): reported as one line, never a traceback."""


def device():
    """The GPU when one is visible, the CPU otherwise."""
    import torch  # here, not above: torch-free stages (search rounds) skip its import

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    except (NeonError, neon_config.ConfigError, OSError) as err:
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


def run_snakemake(smk, body: Callable[[], None]) -> None:
    configure_torch(smk.threads)
    with logged(smk.log[0] if smk.log else None):
        body()


def model_parser(description: str) -> argparse.ArgumentParser:
    """A command line for one stage of one model of a workflow config."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="config.yaml", help="workflow config (default: config.yaml)")
    parser.add_argument("--model", required=True, help="model name in the config's `models`")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log", default=None, help="log file (default: the terminal)")
    return parser


def existing(*kinds: str) -> Callable[[str], str]:
    """An argparse type: the path of an existing file of one of `kinds` (user_files.kind's, or
    "json"), so that a stage run by hand names a wrong input in one line before it starts."""
    def check(path: str) -> str:
        if not Path(path).exists():
            raise argparse.ArgumentTypeError(f"{path}: no such file")
        if "json" in kinds:
            try:
                json.loads(Path(path).read_text())
            except (ValueError, UnicodeDecodeError) as err:
                raise argparse.ArgumentTypeError(f"{path}: not a JSON file ({err})") from None
            return path
        try:
            found = user_files.kind(path)
        except user_files.NotRecognised as err:
            raise argparse.ArgumentTypeError(f"{path}: {err}") from None
        if kinds and found not in kinds:
            raise argparse.ArgumentTypeError(f"{path}: a {found}, not a {' or '.join(kinds)} file")
        return path

    return check


def dataset_from_args(args: argparse.Namespace) -> dict:
    """The config's data set `args.dataset`, for command-line runs of the data set stages."""
    try:
        datasets = neon_config.load(args.config)["datasets"]
    except (OSError, neon_config.ConfigError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.dataset not in datasets:
        raise SystemExit(f"error: datasets: no dataset named {args.dataset!r}")
    return datasets[args.dataset]


def model_from_args(args: argparse.Namespace) -> dict:
    configure_torch(args.threads)
    try:
        return neon_config.model_spec(neon_config.load(args.config), args.model)
    except (OSError, neon_config.ConfigError) as err:
        raise SystemExit(f"error: {err}") from None

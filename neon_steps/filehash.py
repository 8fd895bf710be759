"""The sha256 of a checkpoint's files, computed once per file identity.

A search merges the same two inputs once per point, and sha256 runs at 1–1.5 GB/s a core: for
VAR-d36 (9.4 GB in fp32) hashing both inputs is more CPU time than the rest of the merge. So a
digest is kept in a small JSON file in a cache folder (`$NEON_HASH_CACHE`, else
`$XDG_CACHE_HOME/neon-steps/sha256`, else `~/.cache/neon-steps/sha256`; `NEON_HASH_CACHE=` with
nothing turns the cache off), keyed by the files' resolved paths and valid while every file keeps
its inode, size, mtime and ctime (ctime cannot be set back: a file rewritten in place, even with
its old mtime restored, is hashed again). Processes that ask for the same files at once hash them
once: the others wait on a lock and read the result. No torch here: neon-merge starts hashing
while torch is still being imported.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Iterator, Sequence

from neon_steps.io import write_json

try:
    import fcntl
except ImportError:  # not POSIX: processes do not wait for each other, each hashes
    fcntl = None

CACHE_ENV = "NEON_HASH_CACHE"
CHUNK_BYTES = 8 << 20
# A file changed this recently may change again within its timestamp's granularity, unseen: its
# digest is used but not kept (git's "racy" entries).
RACY_NS = 10**9
KEEP_ENTRIES = 512  # the cache's size once pruned; it is pruned at twice this
_POLL_S = 0.02


class Stopped(Exception):
    """Hashing was abandoned (the merge that asked for it failed)."""


def cache_dir() -> Path | None:
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured).expanduser() if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neon-steps" / "sha256"


def identity(path: Path) -> list:
    """What must stay the same for a digest of the file to hold (the resolved path first)."""
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def sha256_files(files: Sequence[Path], stop: threading.Event | None = None) -> str:
    """The sha256 of the files' bytes end to end, from the cache when their identities match."""
    return sha256_files_async(files, stop).result()


def sha256_files_async(files: Sequence[Path], stop: threading.Event | None = None) -> Future:
    """`sha256_files` on a thread of its own (hashlib releases the GIL), or at once from the cache
    or from `prefetched`."""
    future, key, files = _request(files)
    if key is not None:
        threading.Thread(target=_compute, args=(future, key, files, stop or threading.Event()),
                         name="sha256", daemon=True).start()
    return future


@contextlib.contextmanager
def prefetched(checkpoints: Sequence[Sequence[Path]]) -> Iterator[None]:
    """Hash each checkpoint's files, one checkpoint after another on one thread (the other cores
    stay free for the caller), and have `sha256_files_async` give these computations, under way
    or done, to the calls made inside the block. (Outside it, only the cache holds the digests: a
    file changed a moment ago may change again unseen, and is hashed again.)"""
    keys, todo = [], []
    for files in checkpoints:
        future, key, files = _request(files)
        if key is not None:
            keys.append(key)
            todo.append((future, key, files))
            with _lock:
                _prefetched[key] = future
    if todo:
        threading.Thread(target=lambda: [_compute(*job, threading.Event()) for job in todo],
                         name="sha256-prefetch", daemon=True).start()
    try:
        yield
    finally:
        with _lock:
            for key in keys:
                _prefetched.pop(key, None)


def _request(files: Sequence[Path]) -> tuple[Future, str | None, list[Path]]:
    """The future of the files' digest and, where it is for the caller to compute, its key:
    None for one prefetched, or resolved from the cache."""
    files = [Path(f) for f in files]
    key = json.dumps([identity(f) for f in files])
    with _lock:
        running = _prefetched.get(key)
    if running is not None and not (running.done() and running.exception()):
        return running, None, files
    future = Future()
    cached = _read_entry(key)
    if cached is not None:
        future.set_result(cached)
        return future, None, files
    return future, key, files


_lock = threading.Lock()
_prefetched: dict[str, Future] = {}


def _compute(future: Future, key: str, files: list[Path], stop: threading.Event) -> None:
    try:
        with _shared(key, stop):
            digest = _read_entry(key)  # another process may have hashed them while this one waited
            if digest is None:
                started = time.time_ns()
                digest = _hash(files, stop)
                _write_entry(key, files, digest, started)
        future.set_result(digest)
    except BaseException as err:  # the caller sees it through the future
        future.set_exception(err)


def _hash(files: list[Path], stop: threading.Event) -> str:
    """Read through a mapping whose pages leave the process once hashed (they stay in the page
    cache): no copy into a buffer, and the RSS holds one window."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as pages:
                for start in range(0, size, CHUNK_BYTES):
                    if stop.is_set():
                        raise Stopped(f"hashing {path} was stopped")
                    with memoryview(pages)[start:start + CHUNK_BYTES] as chunk:
                        digest.update(chunk)
                    pages.madvise(mmap.MADV_DONTNEED, start, min(CHUNK_BYTES, size - start))
    return digest.hexdigest()


def _entry_path(key: str) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    paths = [entry[0] for entry in json.loads(key)]
    return folder / f"{hashlib.sha256(json.dumps(paths).encode()).hexdigest()[:32]}.json"


def _read_entry(key: str) -> str | None:
    path = _entry_path(key)
    try:
        entry = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):  # none yet, or a torn or foreign file: hash again
        return None
    if not isinstance(entry, dict) or entry.get("files") != json.loads(key):
        return None
    digest = entry.get("sha256")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def _write_entry(key: str, files: list[Path], digest: str, started_ns: int) -> None:
    """Keep the digest if the files did not change while they were hashed and are not racy; an
    atomic rename, so that a reader sees the old entry or the new one. Failing to keep it is no
    error: the next merge hashes again."""
    path = _entry_path(key)
    identities = json.loads(key)
    try:
        if path is None or [identity(f) for f in files] != identities:
            return
        if any(entry[4] > started_ns - RACY_NS for entry in identities):
            return
        write_json(path, {"files": identities, "sha256": digest})
        _prune(path.parent)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    entries = list(folder.glob("*.json"))
    if len(entries) <= 2 * KEEP_ENTRIES:
        return
    by_age = sorted(entries, key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)
    for old in by_age[:len(entries) - KEEP_ENTRIES]:
        with contextlib.suppress(OSError):
            old.unlink()


@contextlib.contextmanager
def _shared(key: str, stop: threading.Event) -> Iterator[None]:
    """One process at a time hashes these files; the others wait (stoppably) and then find the
    result in the cache. Without a cache, or where locks are not supported, everyone hashes."""
    path = _entry_path(key)
    if path is None or fcntl is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "w")
    except OSError:
        yield
        return
    with lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if stop.is_set():
                    raise Stopped("stopped while another process hashed the same files") from None
                time.sleep(_POLL_S)
            except OSError:  # no locks on this file system
                locked = False
                break
        try:
            yield
        finally:
            if locked:  # whoever waits on this (now unlinked) lock finds the entry once they hold it
                with contextlib.suppress(OSError):
                    os.unlink(lock.name)

"""The single-node SLURM cluster of scripts/slurm/, and what it and snakemake's logs say about a run."""
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "slurm"

# Job states in which sacct may still change its record.
UNFINISHED = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "SUSPENDED")


def start() -> None:
    subprocess.run([str(SCRIPTS / "start-cluster.sh")], check=True)


def stop() -> None:
    subprocess.run([str(SCRIPTS / "stop-cluster.sh")], check=True)


@dataclass(frozen=True)
class SlurmJob:
    id: int
    comment: str  # the plugin's rule_<rule>_wildcards_<values>, or rule_<group>_<rules> for a group
    state: str  # e.g. COMPLETED, "CANCELLED by 0"
    tres: str  # allocated resources, e.g. billing=1,cpu=1,gres/gpu=1,mem=16000M,node=1

    @property
    def gpus(self) -> int:
        match = re.search(r"gres/gpu=(\d+)", self.tres)
        return int(match.group(1)) if match else 0


def accounted_jobs(run_id: str, timeout: float = 60) -> list[SlurmJob]:
    """The jobs of one snakemake run (the plugin names them all after its run ID) as sacct
    records them, once it has recorded how each ended."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-P", "-n", "--name", run_id, "-S", "now-1days",
             "-o", "JobIDRaw,Comment,State,AllocTRES"],
            check=True, capture_output=True, text=True,
        ).stdout
        jobs = [SlurmJob(int(id_), comment, state, tres)
                for id_, comment, state, tres in (line.split("|") for line in out.splitlines())]
        if not any(job.state.startswith(UNFINISHED) for job in jobs) or time.monotonic() > deadline:
            return sorted(jobs, key=lambda job: job.id)
        time.sleep(1)


def running_jobs(run_id: str) -> list[tuple[int, str]]:
    """(job id, comment) of the run's jobs that SLURM runs now."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "--name", run_id, "-o", "%A|%k"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [(int(id_), comment) for id_, comment in (line.split("|", 1) for line in out.splitlines())]


def run_id(log: str) -> str | None:
    """The ID the executor plugin gives all SLURM jobs of a run, from snakemake's output."""
    match = re.search(r"^SLURM run ID: (\S+)$", log, re.M)
    return match.group(1) if match else None


def submissions(log: str) -> dict[int, Path]:
    """SLURM job id -> the job's SLURM log file, for every submission snakemake reports."""
    pattern = r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)"
    return {int(id_): Path(path) for id_, path in re.findall(pattern, log)}


Job = tuple[str, tuple[tuple[str, str], ...]]  # (rule, ((wildcard, value), ...))


def job_blocks(log: str, header: str) -> list[Job]:
    """(rule, wildcards) of each job block in snakemake's output whose first line matches
    `header` (a regex capturing the rule name); its wildcards are on a line indented below."""
    jobs = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        match = re.fullmatch(header, line)
        if not match:
            continue
        indent = len(line) - len(line.lstrip())
        wildcards: tuple[tuple[str, str], ...] = ()
        for body in lines[i + 1:]:
            if not body.strip() or len(body) - len(body.lstrip()) <= indent:
                break
            if body.strip().startswith("wildcards: "):
                pairs = body.strip().removeprefix("wildcards: ").split(", ")
                wildcards = tuple(tuple(pair.split("=", 1)) for pair in pairs)
        jobs.append((match.group(1), wildcards))
    return jobs


def planned_jobs(dry_run_output: str) -> list[Job]:
    """Every job of a dry run, group members included (they are indented)."""
    return job_blocks(dry_run_output, r"\s*(?:local)?rule (\S+):")


def executed_jobs(log: str) -> list[Job]:
    """The jobs a snakemake process ran itself, not submitted: in the main process the local
    rules, in a SLURM job's log the job or group members it ran."""
    return job_blocks(log, r"localrule (\S+):")


class JobCanceller(threading.Thread):
    """Cancels (scancel) the first job of a run whose comment starts with one of `prefixes`,
    once SLURM has run it for `after` seconds: a job killed mid-way."""

    def __init__(self, log_file: Path, prefixes: tuple[str, ...], after: float = 2.0):
        super().__init__(daemon=True)
        self.log_file, self.prefixes, self.after = log_file, prefixes, after
        self.cancelled: int | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        first_seen: dict[int, float] = {}
        while not self.finished.wait(0.25):
            run = run_id(self.log_file.read_text()) if self.log_file.exists() else None
            if run is None:
                continue
            for job_id, comment in running_jobs(run):
                if not comment.startswith(self.prefixes):
                    continue
                if time.monotonic() - first_seen.setdefault(job_id, time.monotonic()) < self.after:
                    continue
                subprocess.run(["scancel", str(job_id)], check=True)
                self.cancelled = job_id
                return

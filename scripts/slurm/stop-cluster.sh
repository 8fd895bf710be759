#!/usr/bin/env bash
# Stop the test cluster of start-cluster.sh: cancel its jobs, then end exactly the
# daemons it started, by the PIDs it saved in $NEON_SLURM_DIR/run/.
#
#   scripts/slurm/stop-cluster.sh           # keep state (munge key, database): quick restart
#   scripts/slurm/stop-cluster.sh --purge   # also delete that state
#
# Safe to run repeatedly, and when start-cluster.sh failed half-way.
set -euo pipefail

STATE=${NEON_SLURM_DIR:-/tmp/neon-slurm}

log() { printf '[stop-cluster %(%H:%M:%S)T] %s\n' -1 "$*"; }

case ${1:-} in
  "" | --purge) ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

# The PID of <name> if its pid file names a live process with that command.
live_pid() {
  local pidfile=$STATE/run/$1.pid
  [[ -s $pidfile ]] || return 1
  local pid
  pid=$(<"$pidfile")
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]] || return 1
  echo "$pid"
}

# Jobs still running would outlive slurmd (their slurmstepd is detached from it),
# so let SLURM end them while the controller is still up.
if live_pid slurmctld >/dev/null; then
  mapfile -t jobs < <(squeue -h -o %A)
  if ((${#jobs[@]})); then
    log "cancelling jobs ${jobs[*]}"
    scancel "${jobs[@]}"
    for _ in {1..60}; do
      [[ -z $(squeue -h -o %A) ]] && break
      sleep 0.5
    done
  fi
fi

# True while <pid> runs; an ended daemon is a zombie until init reaps it, which can
# take seconds here, as the daemons' parent (start-cluster.sh) is gone.
alive() {
  local state
  state=$(ps -o stat= -p "$1") && [[ $state != Z* ]]
}

# In reverse start order, so that no daemon loses one it depends on while busy.
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  if pid=$(live_pid "$name"); then
    kill -TERM "$pid"
    for _ in {1..100}; do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid"
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$STATE/run/$name.pid"
done

# The /etc/slurm links go whatever the mode (start-cluster.sh makes them again): left in place,
# they point every SLURM client at a controller that is gone, and each `scontrol` waits 9 s for it
# (snakemake's SLURM plugin runs `scontrol show config` at every snakemake start).
for conf in slurm.conf gres.conf slurmdbd.conf; do
  if [[ -L /etc/slurm/$conf && $(readlink "/etc/slurm/$conf") == "$STATE/etc/$conf" ]]; then
    rm -f "/etc/slurm/$conf"
  fi
done

if [[ ${1:-} == --purge ]]; then
  # Only what start-cluster.sh creates, in case NEON_SLURM_DIR names a shared directory.
  rm -rf "${STATE:?}"/{etc,run,log,spool,munge,mysql}
  rmdir "$STATE" 2>/dev/null || true
  log "removed the cluster's state in $STATE"
fi

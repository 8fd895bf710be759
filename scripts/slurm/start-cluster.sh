#!/usr/bin/env bash
# Bring up a single-node SLURM test cluster on localhost, for trying and testing
# `snakemake --profile profiles/slurm` without a real cluster.
#
#   sudo scripts/slurm/start-cluster.sh        # as root, Debian 12, systemd not needed
#   scripts/slurm/stop-cluster.sh [--purge]    # ends exactly the daemons started here
#
# What it runs (each as a plain background process, its PID kept in $STATE/run/):
#   munged     authentication between the SLURM daemons and commands
#   mariadbd   private database on 127.0.0.1:$NEON_SLURM_DB_PORT, for slurmdbd
#   slurmdbd   job accounting, so that `sacct` works: the executor plugin checks job
#              states with it unless told to use squeue, and tests read it
#   slurmctld  the controller; one partition "main" holding the one node
#   slurmd     the node: 8 CPUs, 64 GiB and two fake GPUs (gres gpu:fake:2), declared
#              rather than detected, so that profiles/slurm's requests fit unchanged
#
# Idempotent: installs only missing packages, starts only daemons not already
# running, and reuses the state (munge key, database) of an earlier run.
#
# Environment:
#   NEON_SLURM_DIR      state dir: config, logs, PIDs, spool, database (default /tmp/neon-slurm)
#   NEON_SLURM_DB_PORT  TCP port of the private MariaDB on 127.0.0.1 (default 3307)
set -Eeuo pipefail

STATE=${NEON_SLURM_DIR:-/tmp/neon-slurm}
DB_PORT=${NEON_SLURM_DB_PORT:-3307}
CLUSTER=neon
PARTITION=main
HOST=$(hostname -s)
# The node as declared to SLURM. SlurmdParameters=config_overrides makes slurmd
# trust these numbers instead of the machine's, so a GPU job asking for 16 GB is
# scheduled on a laptop or CI runner too; the toy jobs themselves need little.
NODE_CPUS=8
NODE_MEM_MB=65536
# One gres line per fake GPU; SLURM only needs a device file to exist.
FAKE_GPU_FILES=(/dev/null /dev/zero)

log() { printf '[start-cluster %(%H:%M:%S)T] %s\n' -1 "$*"; }
show_logs() {
  local f
  for f in "$STATE"/log/*; do
    [[ -s $f ]] && { echo "==> $f <=="; tail -n 15 "$f"; }
  done
  return 0
}
die() {
  log "ERROR: $*"
  show_logs
  exit 1
}
trap 'log "failed at line $LINENO"; show_logs' ERR
[[ $(id -u) == 0 ]] || die "run as root (the daemons and /etc/slurm need it)"
started_at=$SECONDS

# --------------------------------------------------------------------- packages
# The packages' own scripts must not start their daemons with the packaged config
# (a munged on /run/munge would be in the way of ours): unless the machine already
# has a policy, a policy-rc.d that denies every start is in place during the install.
install_packages() {
  local policy=/usr/sbin/policy-rc.d added="" status=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added=yes
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    status=$?
  if [[ $added ]]; then rm -f "$policy"; fi
  return "$status"
}
packages=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  install_packages "${missing[@]}"
fi

# ----------------------------------------------------------------------- helpers
mkdir -p "$STATE"/{etc,run,log,spool/ctld,spool/d}

# True if $STATE/run/<name>.pid names a live process whose command is <name>;
# the comm check guards against a recycled PID after a reboot or a crash.
running() {
  local pidfile=$STATE/run/$1.pid
  [[ -s $pidfile ]] || return 1
  local pid
  pid=$(<"$pidfile")
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]]
}

# Start <name> in the background with the rest of the arguments, record its PID.
launch() {
  local name=$1
  shift
  nohup "$@" >"$STATE/log/$name.out" 2>&1 &
  echo $! >"$STATE/run/$name.pid"
}

# wait_until <seconds> <what> <command...>: poll until the command succeeds.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
    sleep 0.3
  done
}

# SLURM commands and daemons read /etc/slurm/*.conf. A symlink into $STATE is
# required, not just SLURM_CONF: the jobstep executor strips all SLURM_* variables
# before the srun inside each job. Never replace a file we did not create.
link_config() {
  local target=/etc/slurm/$1
  if [[ -e $target && ! -L $target ]]; then
    die "$target exists and is not ours; this machine has its own SLURM setup"
  fi
  if [[ -L $target && $(readlink "$target") != "$STATE/etc/$1" ]]; then
    die "$target points to $(readlink "$target"); stop that test cluster first"
  fi
  ln -sfn "$STATE/etc/$1" "$target"
}

# ------------------------------------------------------------------------- munge
# munged refuses key and directories not owned by its own user, so it runs as munge.
install -d -o munge -g munge -m 700 "$STATE/munge"
install -d -o munge -g munge -m 755 /run/munge
if [[ ! -s $STATE/munge/munge.key ]]; then
  mungekey --create --keyfile="$STATE/munge/munge.key"
  chown munge:munge "$STATE/munge/munge.key"
  chmod 600 "$STATE/munge/munge.key"
fi
if running munged; then
  log "munged already running"
else
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    die "another munged answers on /run/munge; stop it first"
  fi
  launch munged setpriv --reuid=munge --regid=munge --clear-groups \
    munged --foreground --key-file="$STATE/munge/munge.key" \
    --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" \
    --pid-file="$STATE/munge/munged.pid"
  wait_until 20 munged bash -c 'munge -n | unmunge'
  log "munged started"
fi

# ----------------------------------------------------------------- configuration
install -d -m 755 /etc/slurm
gres_conf="AutoDetect=off"
for file in "${FAKE_GPU_FILES[@]}"; do
  gres_conf+=$'\n'"NodeName=$HOST Name=gpu Type=fake File=$file"
done
printf '%s\n' "$gres_conf" >"$STATE/etc/gres.conf"

cat >"$STATE/etc/slurm.conf" <<EOF
# Written by scripts/slurm/start-cluster.sh; rewritten on every start.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pidfile
SlurmdPidFile=$STATE/run/slurmd.pidfile
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# Containers have no usable cgroups: track processes via /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that names no memory takes the whole node.
DefMemPerCPU=1000
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# Keep the job's comment (the plugin writes rule_<rule>_wildcards_<values> there) and its
# GPUs (gres/gpu in AllocTRES) in sacct.
AccountingStoreFlags=job_comment
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:fake:${#FAKE_GPU_FILES[@]} State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm/start-cluster.sh; rewritten on every start.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pidfile
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$STATE/etc/slurmdbd.conf" # slurmdbd refuses a readable password file

link_config slurm.conf
link_config gres.conf
link_config slurmdbd.conf

# ---------------------------------------------------------------------- database
db_socket=$STATE/mysql/mysqld.sock
if [[ ! -d $STATE/mysql/data/mysql ]]; then
  install -d -o mysql -g mysql -m 750 "$STATE/mysql" "$STATE/mysql/data"
  mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
fi
if running mariadbd; then
  log "mariadbd already running"
else
  launch mariadbd mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
    --socket="$db_socket" --pid-file="$STATE/mysql/mariadbd.pid" \
    --log-error="$STATE/log/mariadbd.log" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
  wait_until 60 mariadbd mariadb-admin --socket="$db_socket" ping
  log "mariadbd started on 127.0.0.1:$DB_PORT"
fi
mariadb --socket="$db_socket" -u root <<'SQL'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# ---------------------------------------------------------------------- slurmdbd
if running slurmdbd; then
  log "slurmdbd already running"
else
  launch slurmdbd slurmdbd -D
  wait_until 60 slurmdbd sacctmgr -n show cluster
  log "slurmdbd started"
fi
# slurmctld only sends accounting for a cluster that slurmdbd knows.
if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
  log "registered cluster $CLUSTER in slurmdbd"
fi

# ------------------------------------------------------------- slurmctld, slurmd
if running slurmctld; then
  log "slurmctld already running; rereading slurm.conf"
  scontrol reconfigure
else
  launch slurmctld slurmctld -D -i
  wait_until 30 slurmctld scontrol ping
  log "slurmctld started"
fi
if running slurmd; then
  log "slurmd already running"
else
  launch slurmd slurmd -D
  log "slurmd started"
fi
node_up() { sinfo -h -n "$HOST" -o %t | grep -Eq '^(idle|mix|alloc)$'; }
wait_until 60 "node $HOST to come up" node_up

# -------------------------------------------------------------------- smoke test
# One real job through the whole chain: scheduling, a fake GPU, accounting.
# shellcheck disable=SC2016  # $CUDA_VISIBLE_DEVICES is the job's, set by slurmd
job=$(sbatch --parsable --gpus=1 --mem=100 -o /dev/null --wrap 'test -n "$CUDA_VISIBLE_DEVICES"')
job_done() { [[ $(sacct -n -X -P -j "$job" -o State) == COMPLETED ]]; }
wait_until 60 "smoke test job $job to be COMPLETED in sacct" job_done
sinfo -N -o '%N %P %t %c %m %G'
log "cluster up in $((SECONDS - started_at)) s; state in $STATE"

#!/usr/bin/env bash
# A real one-node Slurm, with accounting, for tests: `up` installs Debian's packages if missing,
# writes every config, key, database and log under ${VITTT_SLURM_DIR:-/tmp/vittt-slurm}, starts
# munged, mariadbd, slurmdbd, slurmctld and slurmd by hand as root (no systemd needed), waits until
# the node is idle and accounting answers, records the daemons' pids and prints
# `export SLURM_CONF=<path>` as its last line of standard output (everything else goes to stderr):
#
#   eval "$(bash scripts/slurm-local.sh up)"   ...   bash scripts/slurm-local.sh down
#
# `up` on a running Slurm only prints that line; `down` stops exactly the recorded pids (again: no-op).
# The node has VITTT_SLURM_GPUS fake GPUs (character devices, default 4), scheduled as GRES so that
# Slurm sets CUDA_VISIBLE_DEVICES per job, and VITTT_SLURM_CPUS CPUs (default 8, more than the
# machine may have). Accounting (slurmdbd + MariaDB) is not optional: without it sacct cannot report
# a job killed by a signal, and submitit would wait for it forever.
# Ports: VITTT_SLURM_PORT (slurmctld) and the next three (slurmd, slurmdbd, mariadbd); default 6817.
set -euo pipefail

dir=${VITTT_SLURM_DIR:-/tmp/vittt-slurm}
gpus=${VITTT_SLURM_GPUS:-4}
cpus=${VITTT_SLURM_CPUS:-8}
port=${VITTT_SLURM_PORT:-6817}
ctld_port=$port slurmd_port=$((port + 1)) dbd_port=$((port + 2)) db_port=$((port + 3))
host=$(hostname -s)
cluster=vittt
conf=$dir/slurm.conf
pids=$dir/pids
export SLURM_CONF=$conf

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not ready after ${seconds} s (logs: $dir/log)"
        sleep 0.1
    done
}

# A recorded pid is ours only while it still runs the program it was recorded for (a zombie, ended
# but not yet reaped by init, counts as stopped).
alive() {
    local stat
    stat=$(cat "/proc/$2/stat" 2>/dev/null) || return 1
    [[ $stat == "$2 ($1) "* && $stat != "$2 ($1) Z"* ]]
}

# record NAME: append the pid that NAME's daemon wrote to its pid file (as soon as it starts, so
# that `down` can stop a start that failed half way).
record() {
    wait_for 10 "$1's pid file" test -s "$dir/$1.pid"
    echo "$1 $(cat "$dir/$1.pid")" >>"$pids"
}

running() {
    [[ -s $pids ]] || return 1
    local name pid
    while read -r name pid; do alive "$name" "$pid" || return 1; done <"$pids"
}

install_packages() {
    local missing=0 cmd
    for cmd in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
    say "installing slurmctld slurmd slurm-client slurmdbd munge mariadb-server (apt-get)"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
               slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
    mkdir -p "$dir/log"
    if ! "${apt[@]}" >"$dir/log/apt.log" 2>&1; then
        apt-get update -q >>"$dir/log/apt.log" 2>&1
        "${apt[@]}" >>"$dir/log/apt.log" 2>&1 || die "apt-get install failed (see $dir/log/apt.log)"
    fi
}

write_configs() {
    mkdir -p "$dir"/{log,state,spool,munge,dev,db}
    chmod 700 "$dir" "$dir/munge"
    local i
    for ((i = 0; i < gpus; i++)); do  # fake GPUs: character devices (the null device's numbers)
        [[ -c $dir/dev/nvidia$i ]] || mknod "$dir/dev/nvidia$i" c 1 3
    done
    [[ -s $dir/munge/munge.key ]] || mungekey --create --keyfile="$dir/munge/munge.key"
    chmod 600 "$dir/munge/munge.key"
    local auth="AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket"
    cat >"$conf" <<EOF
# Written by scripts/slurm-local.sh: a one-node test cluster.
ClusterName=$cluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
$auth
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# The node may claim more CPUs than the machine has.
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# With slurmdbd, this is the munge socket used to reach it.
AccountingStoragePass=$dir/munge/munge.socket
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4096 Gres=gpu:$gpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    echo "NodeName=$host Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]" >"$dir/gres.conf"
    cat >"$dir/slurmdbd.conf" <<EOF
$auth
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$dir/slurmdbd.conf"
}

start_database() {
    local db=(--no-defaults --datadir="$dir/db" --user=root)
    local sock=$dir/mysqld.sock
    local fresh=0
    if [[ ! -d $dir/db/mysql ]]; then
        mariadb-install-db "${db[@]}" --auth-root-authentication-method=normal --skip-test-db >"$dir/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (see $dir/log/mariadb-install.log)"
        fresh=1
    fi
    setsid mariadbd "${db[@]}" --socket="$sock" --port="$db_port" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$dir/mariadbd.pid" --log-error="$dir/log/mariadbd.log" --innodb-buffer-pool-size=32M \
        </dev/null >/dev/null 2>&1 &
    record mariadbd
    wait_for 30 mariadbd mariadb-admin --socket="$sock" ping
    if ((fresh)); then
        mariadb --socket="$sock" -u root -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    fi
}

cluster_registered() {  # slurmctld has registered with slurmdbd: the cluster has a control host
    [[ -n $(sacctmgr -n -P show cluster "$cluster" format=controlhost 2>/dev/null) ]]
}

node_idle() { [[ $(sinfo -h -N -n "$host" -o %T 2>/dev/null) == idle ]]; }

up() {
    if running; then
        say "already running ($dir)"
        echo "export SLURM_CONF=$conf"
        return
    fi
    [[ ! -s $pids ]] || down  # a partial start: stop what is left of it first
    install_packages
    write_configs
    rm -f "$dir"/*.pid
    : >"$pids"
    munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munged.pid" \
        --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" --force
    record munged
    start_database
    slurmdbd
    record slurmdbd
    wait_for 30 slurmdbd sacctmgr -n show cluster
    [[ -n $(sacctmgr -n -P show cluster "$cluster" format=cluster) ]] || sacctmgr -i add cluster "$cluster" >/dev/null
    slurmctld
    record slurmctld
    slurmd
    record slurmd
    wait_for 30 "the node" node_idle
    wait_for 30 accounting cluster_registered
    say "up: 1 node ($host), $cpus CPUs, $gpus fake GPUs, accounting on ($dir)"
    echo "export SLURM_CONF=$conf"
}

down() {
    if [[ ! -s $pids ]]; then
        say "not running ($dir)"
        return
    fi
    if running; then  # end this cluster's jobs, so no job step outlives its slurmd
        scancel --full --cluster="$cluster" --user=root 2>/dev/null || true
    fi
    local name pid stopped=()
    while read -r name pid; do stopped=("$name $pid" "${stopped[@]}"); done <"$pids"
    for entry in "${stopped[@]}"; do  # reverse order of start: slurmd first, munged last
        read -r name pid <<<"$entry"
        alive "$name" "$pid" || continue
        kill -TERM "$pid"
        local deadline=$((SECONDS + 20))
        while alive "$name" "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        alive "$name" "$pid" && kill -KILL "$pid"
    done
    rm -f "$pids"
    say "down ($dir)"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

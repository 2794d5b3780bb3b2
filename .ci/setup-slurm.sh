#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 from Debian's packages (slurm-wlm + munge), for the tests of
# the dask-jobqueue executor (tests/study/test_study_slurm.py). Installs the packages, writes
# /etc/slurm/slurm.conf (one node named `hostname -s` at 127.0.0.1, no cgroups, no accounting),
# starts munged, slurmctld and slurmd in the background and waits until `sinfo` shows the node idle.
# Idempotent: a second run finds the node up and changes nothing (a changed slurm.conf is applied
# with `scontrol reconfigure`). Logs: /var/log/slurm-mfbo/.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# one-node SLURM on 127.0.0.1 written by mfbo's .ci/setup-slurm.sh"
STATE=/var/lib/slurm-mfbo
LOGS=/var/log/slurm-mfbo

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

node_state() {
    sinfo --noheader --format=%T 2> /dev/null | head -n1 | tr -d '*~#!%$@^-' || true
}

node_ready() {
    case "$(node_state)" in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

ctld_up() {
    scontrol ping 2> /dev/null | grep -q "is UP"
}

if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y slurm-wlm munge
fi

# config_overrides: the node offers 8 CPUs whatever the machine has, so that several single-core
# dask-worker jobs run at once on a 2-core CI machine. The scheduler looks at pending jobs every
# second (with the default, 60 s, a job given a begin time waits up to a minute past it).
NODE="$(hostname -s)"
NEW_CONF="$MARK
ClusterName=mfbo
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=8 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"

CHANGED=0
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "$CONF exists and was not written by this script; leaving it as it is" >&2
elif [ ! -e "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    $SUDO mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS"
    printf '%s\n' "$NEW_CONF" | $SUDO tee "$CONF" > /dev/null
    CHANGED=1
fi

if [ "$CHANGED" = 0 ] && node_ready; then
    echo "SLURM is up: $(sinfo --noheader --format='%N %T %c CPUs' | head -n1)"
    exit 0
fi
$SUDO mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS"

# munge: the key comes with the Debian package; munged runs as the munge user.
if ! munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1; then
    $SUDO mkdir -p /run/munge
    $SUDO chown munge:munge /run/munge
    $SUDO chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        $SUDO mungekey --create --force
        $SUDO chown munge:munge /etc/munge/munge.key
    fi
    $SUDO runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 50); do
        munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1 && break
        sleep 0.1
    done
fi

# The daemons run in the foreground of their own sessions, so they outlive this script.
if ctld_up; then
    if [ "$CHANGED" = 1 ]; then
        $SUDO scontrol reconfigure
    fi
else
    $SUDO setsid slurmctld -D -f "$CONF" >> "$LOGS/slurmctld.out" 2>&1 < /dev/null &
fi
for _ in $(seq 1 100); do
    ctld_up && break
    sleep 0.2
done
if ! pgrep -x slurmd > /dev/null; then
    $SUDO setsid slurmd -D -f "$CONF" >> "$LOGS/slurmd.out" 2>&1 < /dev/null &
fi

for _ in $(seq 1 300); do
    if node_ready; then
        echo "SLURM is up: $(sinfo --noheader --format='%N %T %c CPUs' | head -n1)"
        exit 0
    fi
    case "$(node_state)" in  # a node left down or drained by an earlier run
        down|drained|draining|fail) $SUDO scontrol update NodeName="$NODE" State=RESUME > /dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
echo "SLURM did not come up in 60 s (node state: $(node_state)); logs in $LOGS" >&2
tail -n 20 "$LOGS"/*.log >&2 || true
exit 1

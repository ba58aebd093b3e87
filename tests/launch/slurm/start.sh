#!/usr/bin/env bash
# A one-node SLURM on this machine, for tests/launch/slurm: slurmctld, slurmd and slurmdbd (accounting
# in MariaDB, so that `sacct` answers) on 127.0.0.1, started by hand (no systemd). Needs root.
#
#   tests/launch/slurm/start.sh          install what is missing (apt-get), start what is not running
#   tests/launch/slurm/start.sh stop     stop the daemons this script started (by their recorded PIDs)
#
# Idempotent: a second call finds the daemons running (their PID files) and only checks `sinfo`.
# The node has CPUs=2 (the reference machine's cores): two one-CPU jobs run at once.
# Where the packages cannot be installed it says so and exits 1; the test module then skips.
set -euo pipefail
STATE=${KMX_SLURM_STATE:-/var/tmp/kmx-slurm}      # PID files and logs
CLUSTER=kmx
HOST=$(hostname -s)
CONF=/etc/slurm
mkdir -p "$STATE"

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

stop() {
  # Reverse order; each by the PID this script recorded, never by name.
  for d in slurmd slurmctld slurmdbd mariadbd munged; do
    if alive "$d"; then
      pid=$(cat "$STATE/$d.pid"); kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      echo "stopped $d ($pid)"
    fi
    rm -f "$STATE/$d.pid"
  done
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

if [ "$(id -u)" != 0 ]; then echo "start.sh: needs root to install and start SLURM" >&2; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
   || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm, slurmdbd, munge, mariadb-server (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge \
     mariadb-server >/dev/null) || { echo "start.sh: apt-get could not install SLURM" >&2; exit 1; }
fi

# Start "$name" with the remaining arguments in the background, its PID recorded; wait for $check.
start() {
  local name=$1 check=$2; shift 2
  if alive "$name"; then return; fi
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  for _ in $(seq 100); do
    if eval "$check" >/dev/null 2>&1; then echo "started $name ($(cat "$STATE/$name.pid"))"; return; fi
    alive "$name" || break
    sleep 0.3
  done
  echo "start.sh: $name did not come up; its log $STATE/$name.log:" >&2; tail -20 "$STATE/$name.log" >&2; exit 1
}

# munge: the key and its run folder, owned by the munge user.
[ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge; chown munge:munge /run/munge /var/log/munge /var/lib/munge
start munged "munge -n | unmunge" runuser -u munge -- munged -F

# MariaDB on 127.0.0.1 only, with the accounting database and its user.
mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
start mariadbd "mariadb -e 'select 1'" mariadbd --user=mysql --bind-address=127.0.0.1
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'kmx'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
cat >"$CONF/slurmdbd.conf" <<CONFEOF
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=$HOST
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=kmx
StorageLoc=slurm_acct_db
PidFile=/run/slurm/slurmdbd.pid
LogFile=$STATE/slurmdbd.daemon.log
CONFEOF
chown slurm:slurm "$CONF/slurmdbd.conf"; chmod 600 "$CONF/slurmdbd.conf"
cat >"$CONF/slurm.conf" <<CONFEOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
CommunicationParameters=NoInAddrAny
AuthType=auth/munge
SlurmUser=slurm
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.daemon.log
SlurmdLogFile=$STATE/slurmd.daemon.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobRequeue=1
KillWait=10
JobFileAppend=1
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONFEOF

start slurmdbd "sacctmgr -n list cluster" slurmdbd -D
sacctmgr -n list cluster format=Cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
start slurmctld "scontrol ping | grep -q UP" slurmctld -D
start slurmd "sinfo -h -o %T | grep -Eq 'idle|mixed|alloc'" slurmd -D
scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
sinfo
sacct -a -n -X -o JobID -S now >/dev/null && echo "SLURM up on $HOST with accounting (state and logs in $STATE)"

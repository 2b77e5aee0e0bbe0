#!/usr/bin/env bash
# A one-node Slurm cluster on the loopback address, inside the test: munged with a key of its own,
# slurmctld and slurmd with a minimal slurm.conf (no cgroups, no accounting), all under WORK and
# torn down on exit. Then `streamrecon batch --sbatch` writes a job array for a 3-item manifest,
# sbatch runs it, and every item's outputs are checked; then a task is cancelled mid-item and a
# resubmission of the same script completes it without redoing the finished ones.
# Usage: tests/slurm_test.sh STREAMRECON WORK
set -uo pipefail
BIN=$(realpath "$1")
WORK=$2
for tool in munged slurmctld slurmd sbatch squeue scancel sinfo; do
  command -v "$tool" > /dev/null || { echo "SKIPPED: $tool not found (make setup installs slurm-wlm and munge)"; exit 0; }
done
# slurmd 22.05 (Debian 12) always starts its cgroup plugin, which needs the cgroup filesystem (no
# cgroup limits are used here); a chroot without /sys/fs/cgroup mounted cannot run it.
grep -q " /sys/fs/cgroup " /proc/mounts || { echo "SKIPPED: no cgroup filesystem mounted at /sys/fs/cgroup (slurmd needs one)"; exit 0; }
rm -rf "$WORK" && mkdir -p "$WORK"/{munge,state,spool,log,run}
WORK=$(realpath "$WORK")
fail() { echo "FAIL: $*"; exit 1; }
pids=()
cleanup() {
  scancel --quiet --full --signal=KILL -u "$(id -un)" 2> /dev/null
  for f in "$WORK"/run/slurmd.pid "$WORK"/run/slurmctld.pid "$WORK"/munge/munged.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2> /dev/null
  done
  sleep 1
  for f in "$WORK"/run/slurmd.pid "$WORK"/run/slurmctld.pid "$WORK"/munge/munged.pid; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2> /dev/null
  done
  return 0
}
trap cleanup EXIT

# munge: our own key, socket and state (root needs --force).
head -c 1024 /dev/urandom > "$WORK/munge/munge.key" && chmod 400 "$WORK/munge/munge.key"
MUNGE_SOCKET=$WORK/munge/munge.socket
munged --force --key-file="$WORK/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$WORK/munge/munged.pid" \
  --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/munged.seed" || fail "munged did not start: $(cat "$WORK/munge/munged.log")"

# Free ports for the two daemons.
read -r CTLD_PORT SLURMD_PORT < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])' 2> /dev/null || echo "46817 46818")
NODE=$(hostname -s)
USER_NAME=$(id -un)
cat > "$WORK/slurm.conf" << EOF
ClusterName=streamrecon-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MaxArraySize=1001
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc --all) RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$WORK/slurm.conf
slurmctld -f "$SLURM_CONF" -i || fail "slurmctld did not start: $(tail -5 "$WORK/log/slurmctld.log")"
slurmd -f "$SLURM_CONF" -N "$NODE" || fail "slurmd did not start: $(tail -5 "$WORK/log/slurmd.log")"
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %T 2> /dev/null | head -1)
  [ "$state" = idle ] && break
  sleep 1
done
[ "$state" = idle ] || fail "the node did not come up (state '$state'): $(tail -5 "$WORK/log/slurmd.log") $(tail -5 "$WORK/log/slurmctld.log")"
echo "cluster: $NODE idle (slurmctld :$CTLD_PORT, slurmd :$SLURMD_PORT)"

ARGS=(--random-weights --config parity-tiny --size 70x56 --no-depth-maps)
SBATCH_ARGS=(--gpus-per-task 0 --cpus-per-task 1 --mem 400M --time-limit 00:10:00)

# 1. A 3-item array runs to the end.
printf 'name,synthetic,scene\nwalk,3,walk\norbit,3,orbit\npan,3,pan\n' > "$WORK/items.csv"
"$BIN" batch "$WORK/items.csv" --out "$WORK/root" "${ARGS[@]}" --sbatch "$WORK/job.sh" "${SBATCH_ARGS[@]}" || fail "--sbatch failed"
grep -q -- "--array=0-2" "$WORK/job.sh" || fail "job.sh has no 3-task array: $(cat "$WORK/job.sh")"
sbatch --wait --quiet "$WORK/job.sh" || fail "the array failed: $(cat "$WORK"/root/logs/*.out 2> /dev/null | tail -20)"
for item in walk orbit pan; do
  for f in run.json points.ply cameras.json trajectory.txt; do
    [ -f "$WORK/root/$item/$f" ] || fail "$item/$f missing after the array ran: $(cat "$WORK"/root/logs/*.out | tail -20)"
  done
done
[ "$(grep -c '"status":"done"' "$WORK/root/batch.jsonl")" = 3 ] || fail "batch.jsonl: $(cat "$WORK/root/batch.jsonl")"
echo "PASS array: 3 items done by 3 tasks"

# 2. Kill a task mid-item, resubmit: the finished items stay, the killed one is completed.
printf 'name,synthetic,scene\nshort1,2,walk\nlong,1500,orbit\nshort2,2,pan\n' > "$WORK/items2.csv"
"$BIN" batch "$WORK/items2.csv" --out "$WORK/root2" "${ARGS[@]}" --sbatch "$WORK/job2.sh" "${SBATCH_ARGS[@]}" || fail "--sbatch failed"
job=$(sbatch --parsable "$WORK/job2.sh") || fail "sbatch failed"
job=${job%%;*}
for _ in $(seq 480); do  # until the long item is under way and a short one is done
  [ -d "$WORK/root2/.partial/long" ] && [ -f "$WORK/root2/short1/run.json" ] && break
  sleep 0.5
done
[ -d "$WORK/root2/.partial/long" ] || fail "the long item never started: $(cat "$WORK"/root2/logs/*.out 2> /dev/null | tail -20)"
sleep 1
scancel --signal=KILL "${job}_1" || fail "scancel failed"
for _ in $(seq 480); do  # the other tasks finish
  [ -z "$(squeue -h -j "$job" 2> /dev/null)" ] && break
  sleep 0.5
done
[ -f "$WORK/root2/long/run.json" ] && fail "the killed item was finished anyway (the test needs it cut short)"
[ -d "$WORK/root2/.partial/long" ] || fail "the killed item left no partial folder"
done_before=$(grep -c '"status":"done"' "$WORK/root2/batch.jsonl")
[ "$done_before" = 2 ] || fail "before the resubmission: $(cat "$WORK/root2/batch.jsonl")"
sbatch --wait --quiet "$WORK/job2.sh" || fail "the resubmitted array failed: $(tail -20 "$WORK"/root2/logs/*.out)"
[ -f "$WORK/root2/long/run.json" ] || fail "the killed item was not completed by the resubmission"
[ -d "$WORK/root2/.partial/long" ] && fail "the partial folder of the killed item is still there"
for item in short1 short2; do
  [ "$(grep -c "\"name\":\"$item\",.*\"status\":\"done\"\|\"status\":\"done\".*\"name\":\"$item\"" "$WORK/root2/batch.jsonl")" = 1 ] ||
    fail "$item was redone: $(cat "$WORK/root2/batch.jsonl")"
done
grep -q "done earlier, skipped" "$WORK"/root2/logs/*.out || fail "no task said it skipped a finished item"
echo "PASS resume: the killed item completed, the finished ones skipped"
echo "slurm: all checks passed"

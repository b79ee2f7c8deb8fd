#!/usr/bin/env bash
# The sweep on a real single-node Slurm cluster: MUNGE, slurmctld and slurmd
# started here with a generated slurm.conf for this host (private sockets,
# ports and state folders under WORK), a 3-task job array over 60
# Fashion-MNIST test images with 4 boxes and the dependent merge job through
# tools/slurm/submit.sh; the merged file must equal a single-process run.
# Every daemon it starts is stopped on exit, whatever happens.
#   tests/slurm_test.sh IPNA_FAST SOURCE_DIR WORK
set -euo pipefail
exe="$1" src="$2" work="$3"
for p in munged slurmctld slurmd sbatch squeue sinfo; do
  command -v "$p" >/dev/null || { echo "FAIL: $p not found: tools/setup.sh installs slurm-wlm and munge"; exit 1; }
done
rm -rf "$work"
mkdir -p "$work"/{munge,state,spool,out}
chmod 700 "$work/munge"
pids=()
cleanup() {
  for f in "$work/slurmd.pid" "$work/slurmctld.pid" "$work/munge/munged.pid"; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# MUNGE with its own key and socket (the machine's munged, if any, is left alone).
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
munged --force --key-file="$work/munge/munge.key" --socket="$work/munge/munge.sock" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/seed"
for _ in $(seq 50); do [ -S "$work/munge/munge.sock" ] && break; sleep 0.1; done

# Free ports for the controller and the node daemon.
read -r ctl_port node_port < <(python3 - <<'PY'
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])
PY
)
host=$(hostname -s)
cat > "$work/slurm.conf" <<CONF
ClusterName=ipnatest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$node_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.sock
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerParameters=sched_interval=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$work/slurm.conf"
slurmctld -D -c -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 120); do
  state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
if [ "$state" != idle ]; then
  echo "FAIL: the node did not come up (state '$state')"; tail -20 "$work"/slurm*.log "$work"/*.out; exit 1
fi
echo "cluster up: $(sinfo -h -o '%N %c CPUs %T')"

args=(--model "$src/models/fashion_cnn.onnx" --split hidden --idx /usr/share/datasets/fashion-mnist --limit 60
      --box 0 0 14 14 --box 0 14 14 28 --box 14 0 28 14 --box 14 14 28 28 -n 32 --prune-fractions 0.1,0.5
      --batch-items 8 --quiet)
read -r _ array _ merge < <(bash "$src/tools/slurm/submit.sh" -N 3 -o "$work/out/sweep" --exe "$exe" -- "${args[@]}")
echo "submitted array $array, merge $merge"
for _ in $(seq 600); do
  [ -z "$(squeue -h 2>/dev/null)" ] && break
  sleep 0.5
done
if [ -n "$(squeue -h)" ]; then echo "FAIL: jobs still queued after 300 s:"; squeue; exit 1; fi
for f in "$work"/out/*.log; do echo "--- $f"; tail -3 "$f"; done
[ -f "$work/out/sweep.h5" ] || { echo "FAIL: the merge job wrote no sweep.h5"; exit 1; }
for i in 0 1 2; do [ -f "$work/out/sweep.shard$i.h5" ] || { echo "FAIL: no shard $i"; exit 1; }; done

OMP_NUM_THREADS=1 "$exe" sweep "${args[@]}" -o "$work/out/single.h5"
/usr/bin/python3 "$src/tests/compare_sweeps.py" "$work/out/sweep.h5" "$work/out/single.h5"
echo "slurm: the merged 3-shard file equals the single-process run"

#!/usr/bin/env bash
# Stops the cluster that cluster/chaos/proc-up.sh started (same
# LEASEHOLD_DATA_DIR): removes its iptables rules, resumes paused nodes, then
# SIGTERM (SIGKILL after 5 s) for exactly the recorded pids. Data is kept;
# delete the data directory for a fresh cluster.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
export CHAOS_BACKEND=process
source "$here/backend-process.sh"
[ -f "$P_DATA/cluster.env" ] || { echo "no cluster recorded in $P_DATA"; exit 0; }
p_load
echo "heal: $(be_heal)"
for i in $NODES; do
  if be_running "$i"; then
    pid="$(p_pid "$i")"
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid"
    p_wait_gone "$i" || { kill -KILL "$pid"; p_wait_gone "$i" || true; }
    echo "stopped node $i (pid $pid)"
  fi
done
rm -f "$P_DATA/pids"

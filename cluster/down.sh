#!/usr/bin/env bash
# Stops exactly the processes cluster/up.sh started (recorded pids).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${LEASEHOLD_DATA_DIR:-$(cd "$here/.." && pwd)/.leasehold-data}"
[ -f "$data/pids" ] || { echo "no cluster recorded in $data"; exit 0; }
while read -r id pid; do
  if kill -0 "$pid" 2>/dev/null; then
    # SIGTERM is a graceful stop (step aside, drain at most 6 s, stop Raft).
    kill -TERM "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped node $id (pid $pid)"
  fi
done < "$data/pids"
rm -f "$data/pids"

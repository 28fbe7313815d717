#!/usr/bin/env bash
# Shows whether each node started by cluster/up.sh is running; exit 1 if any is not.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${LEASEHOLD_DATA_DIR:-$(cd "$here/.." && pwd)/.leasehold-data}"
[ -f "$data/pids" ] || { echo "no cluster recorded in $data"; exit 1; }
rc=0
while read -r id pid; do
  if kill -0 "$pid" 2>/dev/null; then
    echo "node $id: running (pid $pid)"
  else
    echo "node $id: not running"; rc=1
  fi
done < "$data/pids"
exit $rc

#!/usr/bin/env bash
# Starts a three-node Leasehold cluster as plain processes on 127.0.0.1 for
# the process backend of the nemeses (LEASEHOLD_CHAOS_BACKEND=process).
# Like cluster/up.sh (same data layout and pids file, so cluster/down.sh and
# cluster/status.sh work on it too), and in addition it:
#   - records each node's full command line in $DATA/cmd-I (one argument per
#     line), so a nemesis can restart the node exactly as it was started;
#   - runs node I with its own group id GID_BASE+I (setpriv --regid), which
#     lets iptables partition nodes that all live on 127.0.0.1;
#   - writes $DATA/cluster.env (ports, group ids, binary) for the nemeses.
#
# Environment (all optional):
#   LEASEHOLD_DATA_DIR       data root (default ./.leasehold-data)
#   LEASEHOLD_RAFT_PORT      first Raft peer port (default 7101; nodes use +0,+1,+2)
#   LEASEHOLD_API_PORT       first client API port (default 7001)
#   LEASEHOLD_BIN            binary to run (default: build target/release/leasehold;
#                            the clock nemesis needs a dynamically linked one)
#   LEASEHOLD_CHAOS_GID_BASE node I runs with group id BASE+I (default 47100)
#   LEASEHOLD_SERVER_ARGS    extra `leasehold server` flags, e.g. "--heartbeat-ms 50"
#
# Stop with cluster/chaos/proc-down.sh (also heals partitions, resumes paused nodes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
export CHAOS_BACKEND=process
root="$CHAOS_ROOT"
data="${LEASEHOLD_DATA_DIR:-$root/.leasehold-data}"
raft_port="${LEASEHOLD_RAFT_PORT:-7101}"
api_port="${LEASEHOLD_API_PORT:-7001}"
gid_base="${LEASEHOLD_CHAOS_GID_BASE:-47100}"
bin="${LEASEHOLD_BIN:-}"
read -r -a extra <<<"${LEASEHOLD_SERVER_ARGS:-}"

if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked -p leasehold-cli >&2)
  bin="$root/target/release/leasehold"
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
[ -x "$bin" ] || die "no executable $bin"
command -v setpriv >/dev/null || die "setpriv (util-linux) is needed to give each node its own group id"
[ "$(id -u)" = 0 ] || log "warning: not root: setpriv --regid and iptables will fail"

mkdir -p "$data"
data="$(cd "$data" && pwd)"
if [ -f "$data/pids" ]; then
  while read -r _ pid; do
    if kill -0 "$pid" 2>/dev/null; then
      die "a cluster from $data is already running (cluster/chaos/proc-down.sh stops it)"
    fi
  done <"$data/pids"
fi

nodes="1 2 3"
cat >"$data/cluster.env" <<ENV
# Written by cluster/chaos/proc-up.sh; read by the process backend.
NODES="$nodes"
RAFT_PORT=$raft_port
API_PORT=$api_port
GID_BASE=$gid_base
BIN="$bin"
ENV

# --plaintext: the chaos cluster is a throwaway on loopback, and its
# workload and nemeses talk to it without certificates (a node with neither
# TLS nor --plaintext refuses to start).
peers=()
for i in $nodes; do
  peers+=(--peer "$i=127.0.0.1:$((raft_port + i - 1)),127.0.0.1:$((api_port + i - 1))")
done
# --auth-open: a loopback test cluster whose chaos workload and checker talk
# to the API without tokens (authentication has its own tests, tests/tests/auth.rs).
for i in $nodes; do
  printf '%s\n' setpriv --regid "$((gid_base + i))" --clear-groups -- \
    "$bin" server --id "$i" \
    --raft-listen "127.0.0.1:$((raft_port + i - 1))" \
    --api-listen "127.0.0.1:$((api_port + i - 1))" \
    "${peers[@]}" --data-dir "$data/node-$i" --plaintext --auth-open "${extra[@]}" >"$data/cmd-$i"
  rm -f "$data/clock-$i"
done

export LEASEHOLD_DATA_DIR="$data"
source "$here/backend-process.sh"
: >"$data/pids"
for i in $nodes; do
  pid="$(p_start_node "$i")"
  echo "  node $i: pid $pid  raft 127.0.0.1:$((raft_port + i - 1))  api 127.0.0.1:$((api_port + i - 1))  gid $((gid_base + i))" >&2
done
echo "started 3 nodes (data, logs, command lines in $data)" >&2

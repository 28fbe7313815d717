#!/usr/bin/env bash
# GFS chunk primaries on Leasehold, in one command: starts a three-node
# Leasehold cluster, two masters, five chunkservers and several writers;
# prints primary changes as they happen; kills the current primary of a
# chunk and the elected master mid-run (and restarts both: the old primary
# comes back stale and is re-replicated); checks every acknowledged write
# and append on the replicas at the end; prints
#   chunks=… reassignments=… acknowledged_writes=… appends=… violations=0
#
#   cluster/gfs-demo.sh [--seconds N] [--writers N] [--out DIR]
#
# Ports (all on 127.0.0.1): GFS_DEMO_PORT_BASE (default 27000): Leasehold API
# +1..+3, Raft +101..+103, metrics +201..+203, masters +401/+402,
# chunkservers +501..+505. Exits 1 if the checker found a violation.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
seconds=45
writers=6
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --writers) writers="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gfs-demo.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
base="${GFS_DEMO_PORT_BASE:-27000}"
out="${out:-$(mktemp -d /tmp/gfs-demo.XXXXXX)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
say() { echo "gfs-demo: $*"; }

say "building leasehold and leasehold-gfs (release)"
(cd "$root" && cargo build --release --locked -p leasehold-cli -p leasehold-gfs >&2)
mkdir -p "$out/bin" "$out/run" "$out/history"
cp "$root/target/release/leasehold" "$root/target/release/leasehold-gfs" "$out/bin/"
export GFS_RUN="$out/run" GFS_BIN="$out/bin/leasehold-gfs"
export GFS_MASTERS="127.0.0.1:$((base + 401)),127.0.0.1:$((base + 402))"
# shellcheck source=cluster/gfs-lib.sh
source "$here/gfs-lib.sh"
leasehold="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
export LEASEHOLD_DATA_DIR="$out/leasehold" LEASEHOLD_BIN="$out/bin/leasehold"
export LEASEHOLD_API_PORT=$((base + 1)) LEASEHOLD_RAFT_PORT=$((base + 101)) LEASEHOLD_METRICS_PORT=$((base + 201))
names=(m1 m2 cs1 cs2 cs3 cs4 cs5)
tail_pid=""
cleanup() {
  set +e
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
  for n in "${names[@]}"; do gfs_term "$n"; done
  "$here/down.sh" >/dev/null 2>&1
}
trap cleanup EXIT

say "starting Leasehold (3 nodes, API $leasehold)"
"$here/up.sh" >"$out/leasehold-up.log"
# up.sh's cluster runs TLS (the GFS binaries find $LEASEHOLD_DATA_DIR/tls by
# default) and requires tokens: masters recall chunk leases, which needs the
# admin principal up.sh made. A production chunkserver would get a client
# principal limited to chunk/ (README, Authentication).
export LEASEHOLD_TOKEN_FILE="$LEASEHOLD_DATA_DIR/admin.token"
chunk_bytes=$((256 * 1024))
for i in 1 2; do
  gfs_record "m$i" "$GFS_BIN" master --id "m$i" --listen "127.0.0.1:$((base + 400 + i))" \
    --leasehold "$leasehold" --history "$out/history/m$i.jsonl"
  gfs_start "m$i"
done
for i in 1 2 3 4 5; do
  gfs_record "cs$i" "$GFS_BIN" chunkserver --id "cs$i" --listen "127.0.0.1:$((base + 500 + i))" \
    --data-dir "$out/data/cs$i" --leasehold "$leasehold" --masters "$GFS_MASTERS" \
    --chunk-bytes "$chunk_bytes" --history "$out/history/cs$i.jsonl"
  gfs_start "cs$i"
done
for _ in $(seq 100); do [ -n "$(gfs_elected)" ] && break; sleep 0.2; done
say "masters m1, m2 (elected: $(gfs_elected)); chunkservers cs1..cs5; logs in $GFS_RUN"

# Primary changes as the masters log them.
tail -q -n 0 -F "$GFS_RUN/m1.log" "$GFS_RUN/m2.log" 2>/dev/null |
  sed -u -n 's/.*primary change chunk="\{0,1\}\([^" ]*\)"\{0,1\} old="\{0,1\}\([^" ]*\)"\{0,1\} new="\{0,1\}\([^" ]*\)"\{0,1\} version=\([0-9]*\) master=\([^ ]*\).*/gfs-demo: primary change: chunk \1: \2 -> \3, version \4 (master \5)/p' &
tail_pid=$!

say "$writers writers for ${seconds}s (appends, and writes at offsets)"
"$GFS_BIN" workload --masters "$GFS_MASTERS" --writers "$writers" --seconds "$seconds" \
  --chunk-bytes "$chunk_bytes" --history "$out/history/workload.jsonl" \
  >"$out/workload.json" 2>"$out/workload.log" &
workload=$!

sleep $((seconds / 3))
read -r chunk victim version <<<"$(gfs_primary_of_some_chunk)" || true
if [ -n "${victim:-}" ]; then
  say "kill -9 $victim (primary of chunk $chunk, version $version)"
  gfs_kill "$victim"
  sleep 5
  say "restarting $victim on its old data (its replicas are stale now)"
  gfs_start "$victim"
fi
sleep $((seconds / 3))
elected="$(gfs_elected)"
if [ -n "$elected" ]; then
  say "kill -9 the elected master $elected"
  gfs_kill "$elected"
  for _ in $(seq 100); do
    e="$(gfs_elected)"
    [ -n "$e" ] && [ "$e" != "$elected" ] && break
    sleep 0.2
  done
  say "elected master now: $(gfs_elected)"
  gfs_start "$elected"
fi
wait "$workload"
say "writers done: $(cat "$out/workload.json")"
gfs_settled 60 || say "warning: not every chunk has a full replica set yet"
kill "$tail_pid" 2>/dev/null || true
tail_pid=""
for n in "${names[@]}"; do gfs_term "$n"; done
"$here/down.sh" >/dev/null 2>&1 || true

data_args=()
for i in 1 2 3 4 5; do data_args+=("cs$i=$out/data/cs$i"); done
set +e
"$GFS_BIN" check --history "$out"/history/*.jsonl --data "${data_args[@]}" >"$out/check.json"
rc=$?
set -e
python3 - "$out/check.json" "$out/workload.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
w = json.load(open(sys.argv[2]))
for v in c["violations"][:10]:
    print(f"gfs-demo: VIOLATION {v['rule']}: {v['detail']}")
print(f"gfs-demo: append throughput {w['appends_per_second']:.0f} records/s "
      f"({w['appends']} appends of 1 KiB in {w['seconds']:.0f} s, 3 replicas, fsync per replica)")
print(f"chunks={c['chunks']} reassignments={c['reassignments']} "
      f"acknowledged_writes={c['acknowledged_writes']} appends={c['appends']} "
      f"violations={len(c['violations'])}")
PY
say "everything is in $out"
exit "$rc"

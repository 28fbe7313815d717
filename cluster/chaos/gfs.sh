#!/usr/bin/env bash
# Chaos run of GFS chunk primaries on Leasehold (process backend): a
# three-node Leasehold cluster (cluster/chaos/proc-up.sh), two masters, five
# chunkservers and writers, while a seeded schedule of faults hits
# chunkservers, masters and Leasehold nodes: kill -9 (then restart), pause
# (SIGSTOP/SIGCONT), partition (iptables on the process's own group id:
# isolated from everything, or cut from Leasehold only). At the end every
# fault is healed, the cluster settles, and `leasehold-gfs check` reads the
# histories (CLOCK_MONOTONIC) and the replicas on disk. Exits 1 on any
# violation.
#
#   cluster/chaos/gfs.sh --minutes N [--seed S] [--out DIR] [--writers N]
#                        [--unsafe-ignore-deadline] [--expect-violation]
#
#   --unsafe-ignore-deadline  UNSAFE: chunkservers keep accepting writes as
#                             primary after their deadline (the checker must
#                             then find two primaries at once)
#   --expect-violation        exit 0 only if the checker DID find one
#
# Ports: GFS_CHAOS_PORT_BASE (default 18000): Leasehold API +1..+3, Raft
# +101..+103, masters +401/+402, chunkservers +501..+505. Group ids:
# LEASEHOLD_CHAOS_GID_BASE (default 47300) +1..+3 for Leasehold nodes,
# +11/+12 masters, +21..+25 chunkservers. Needs root (setpriv, iptables).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
minutes=""
seed=$RANDOM
out=""
writers=6
unsafe=0
expect_violation=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --writers) writers="$2"; shift 2 ;;
    --unsafe-ignore-deadline) unsafe=1; shift ;;
    --expect-violation) expect_violation=1; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *) echo "gfs.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$minutes" ] || { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
base="${GFS_CHAOS_PORT_BASE:-18000}"
gid_base="${LEASEHOLD_CHAOS_GID_BASE:-47300}"
out="${out:-$(mktemp -d /tmp/gfs-chaos.XXXXXX)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log() { echo "gfs.sh: $*" >&2; }
command -v iptables >/dev/null || { log "installing iptables"; apt-get install -y iptables >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y iptables >/dev/null; }; }

log "building (release)"
(cd "$root" && cargo build --release --locked -p leasehold-cli -p leasehold-gfs >&2)
mkdir -p "$out/bin" "$out/run" "$out/history"
cp "$root/target/release/leasehold" "$root/target/release/leasehold-gfs" "$out/bin/"

export LEASEHOLD_CHAOS_BACKEND=process LEASEHOLD_DATA_DIR="$out/leasehold"
export LEASEHOLD_API_PORT=$((base + 1)) LEASEHOLD_RAFT_PORT=$((base + 101))
export LEASEHOLD_CHAOS_GID_BASE="$gid_base" LEASEHOLD_BIN="$out/bin/leasehold" LEASEHOLD_CLI="$out/bin/leasehold"
export GFS_RUN="$out/run" GFS_BIN="$out/bin/leasehold-gfs"
export GFS_MASTERS="127.0.0.1:$((base + 401)),127.0.0.1:$((base + 402))"
# shellcheck source=cluster/gfs-lib.sh
source "$root/cluster/gfs-lib.sh"
# shellcheck source=cluster/chaos/lib.sh
source "$here/lib.sh"
leasehold="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
tag="gfs-chaos-$base"
masters=(m1 m2)
servers=(cs1 cs2 cs3 cs4 cs5)
gid_of() { case "$1" in m*) echo $((gid_base + 10 + ${1#m})) ;; cs*) echo $((gid_base + 20 + ${1#cs})) ;; esac; }
heal_gfs() {
  local rule
  while read -r rule; do
    [ -n "$rule" ] || continue
    # shellcheck disable=SC2086
    iptables -w ${rule/#-A/-D}
  done < <(iptables -w -S OUTPUT 2>/dev/null | grep -- "--comment $tag" || true)
}
teardown() {
  set +e
  for n in "${masters[@]}" "${servers[@]}"; do gfs_term "$n"; done
  heal_gfs
  "$here/nemesis.sh" heal-all >/dev/null 2>&1
  "$here/proc-down.sh" >/dev/null 2>&1
}
trap teardown EXIT

rm -rf "$LEASEHOLD_DATA_DIR"
"$here/proc-up.sh" >&2
"$here/nemesis.sh" wait-healthy 60 >&2
unsafe_flag=()
[ "$unsafe" = 1 ] && unsafe_flag=(--unsafe-ignore-deadline)
for i in 1 2; do
  gfs_record "m$i" setpriv --regid "$(gid_of "m$i")" --clear-groups -- \
    "$GFS_BIN" master --id "m$i" --listen "127.0.0.1:$((base + 400 + i))" \
    --leasehold "$leasehold" --history "$out/history/m$i.jsonl"
  gfs_start "m$i"
done
chunk_bytes=$((256 * 1024))
for i in 1 2 3 4 5; do
  gfs_record "cs$i" setpriv --regid "$(gid_of "cs$i")" --clear-groups -- \
    "$GFS_BIN" chunkserver --id "cs$i" --listen "127.0.0.1:$((base + 500 + i))" \
    --data-dir "$out/data/cs$i" --leasehold "$leasehold" --masters "$GFS_MASTERS" \
    --chunk-bytes "$chunk_bytes" --history "$out/history/cs$i.jsonl" ${unsafe_flag[@]+"${unsafe_flag[@]}"}
  gfs_start "cs$i"
done
for _ in $(seq 150); do [ -n "$(gfs_elected)" ] && break; sleep 0.2; done
[ -n "$(gfs_elected)" ] || { log "no master elected"; exit 2; }

fault_seconds=$(python3 -c "print(int(float('$minutes') * 60))")
log "seed=$seed minutes=$minutes writers=$writers unsafe=$unsafe out=$out"
"$GFS_BIN" workload --masters "$GFS_MASTERS" --writers "$writers" --seconds $((fault_seconds + 15)) \
  --chunk-bytes "$chunk_bytes" --history "$out/history/workload.jsonl" \
  >"$out/workload.json" 2>"$out/workload.log" &
workload=$!

# One fault at a time: pick a kind and a target, hold it 1-8 s, heal, pause 1-3 s.
RANDOM=$seed
faults="$out/faults.jsonl"
: >"$faults"
gfs_fault() { # KIND TARGET ACTION...: runs ACTION, logs a fault line
  local kind="$1" target="$2" t0
  shift 2
  t0="$(mono_ns)"
  "$@" || true
  emit "$kind" "$target" "$t0" >>"$faults"
}
isolate() { iptables -w -I OUTPUT 1 -m owner --gid-owner "$(gid_of "$1")" -m comment --comment "$tag" -j DROP; }
cut_leasehold() {
  local p
  for p in 1 2 3; do
    iptables -w -I OUTPUT 1 -m owner --gid-owner "$(gid_of "$1")" -p tcp --dport $((base + p)) \
      -m comment --comment "$tag" -j DROP
  done
}
end=$(($(date +%s) + fault_seconds))
while [ "$(date +%s)" -lt "$end" ]; do
  hold=$((1 + RANDOM % 8))
  case $((RANDOM % 9)) in
    0 | 1) t="${servers[RANDOM % 5]}"; gfs_fault kill "$t" gfs_kill "$t"; sleep "$hold"; gfs_fault restart "$t" gfs_start "$t" ;;
    2) t="${servers[RANDOM % 5]}"; gfs_fault pause "$t" gfs_pause "$t"; sleep "$hold"; gfs_fault resume "$t" gfs_resume "$t" ;;
    3) t="${servers[RANDOM % 5]}"; gfs_fault partition "$t" isolate "$t"; sleep "$hold"; gfs_fault heal "$t" heal_gfs ;;
    4) t="${servers[RANDOM % 5]}"; gfs_fault partition-leasehold "$t" cut_leasehold "$t"; sleep "$hold"; gfs_fault heal "$t" heal_gfs ;;
    5) t="$(gfs_elected)"; t="${t:-m$((1 + RANDOM % 2))}"
       case $((RANDOM % 3)) in
         0) gfs_fault kill "$t" gfs_kill "$t"; sleep "$hold"; gfs_fault restart "$t" gfs_start "$t" ;;
         1) gfs_fault pause "$t" gfs_pause "$t"; sleep "$hold"; gfs_fault resume "$t" gfs_resume "$t" ;;
         2) gfs_fault partition "$t" isolate "$t"; sleep "$hold"; gfs_fault heal "$t" heal_gfs ;;
       esac ;;
    6) "$here/nemesis.sh" kill random >>"$faults" 2>>"$out/nemesis.log" || true; sleep "$hold"
       "$here/nemesis.sh" restart all >>"$faults" 2>>"$out/nemesis.log" || true ;;
    7) "$here/nemesis.sh" pause random >>"$faults" 2>>"$out/nemesis.log" || true; sleep "$hold"
       "$here/nemesis.sh" resume all >>"$faults" 2>>"$out/nemesis.log" || true ;;
    8) "$here/nemesis.sh" partition random >>"$faults" 2>>"$out/nemesis.log" || true; sleep "$hold"
       "$here/nemesis.sh" heal >>"$faults" 2>>"$out/nemesis.log" || true ;;
  esac
  sleep $((1 + RANDOM % 3))
done
log "faults done; healing everything"
heal_gfs
"$here/nemesis.sh" heal-all >>"$faults" 2>>"$out/nemesis.log" || true
for n in "${masters[@]}" "${servers[@]}"; do
  gfs_resume "$n" || true
  gfs_running "$n" || gfs_start "$n"
done
wait "$workload" || log "the workload exited with an error (workload.log)"
gfs_settled 90 || log "warning: not every chunk has a primary with a full replica set"
gfs_status >"$out/final-status.jsonl"
for n in "${masters[@]}" "${servers[@]}"; do gfs_term "$n"; done

data_args=()
for i in 1 2 3 4 5; do data_args+=("cs$i=$out/data/cs$i"); done
set +e
"$GFS_BIN" check --history "$out"/history/*.jsonl --data "${data_args[@]}" >"$out/summary.json"
rc=$?
set -e
python3 - "$out/summary.json" "$out/workload.json" "$faults" <<'PY' | tee "$out/summary.txt" >&2
import collections, json, sys
c = json.load(open(sys.argv[1]))
w = json.load(open(sys.argv[2]))
kinds = collections.Counter()
for line in open(sys.argv[3]):
    try:
        f = json.loads(line)
    except ValueError:
        continue
    node = f.get("node")
    who = "leasehold" if isinstance(node, int) else ("master" if str(node).startswith("m") else "chunkserver")
    if f["fault"] in ("kill", "pause", "partition", "partition-leasehold"):
        kinds[f"{f['fault']}:{who}"] += 1
print("faults:", ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none")
print(f"chunks={c['chunks']} primary_terms={c['primary_terms']} reassignments={c['reassignments']} "
      f"recalls={c['recalls']} acknowledged_writes={c['acknowledged_writes']} appends={c['appends']} "
      f"accepts={c['accepts']} replicas={c['replicas']} up_to_date={c['replicas_up_to_date']} "
      f"violations={len(c['violations'])}")
print(f"append throughput under faults: {w['appends_per_second']:.0f} records/s; failed ops: {w['failed']}")
for v in c["violations"][:10]:
    print(f"  {v['rule']}: {v['detail']}")
PY
log "results in $out"
if [ "$expect_violation" = 1 ]; then
  [ "$rc" = 1 ] && { log "violation found, as expected"; exit 0; }
  log "expected a violation, found none"; exit 1
fi
exit "$rc"

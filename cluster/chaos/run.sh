#!/usr/bin/env bash
# One whole chaos run: start a cluster, run the contending workload while a
# seeded random schedule of faults hits the cluster, heal, check the history
# and write a report. Exits 1 if the checker found any violation.
#
#   cluster/chaos/run.sh --minutes N [--nemesis all|kill,pause,partition,...]
#                        [--seed S] [--backend docker|process] [--out DIR]
#                        [--clients N] [--resources N] [--ttl-ms MS]
#                        [--unsafe-clock-rate-ppm PPM] [--expect-violation]
#
#   --backend          docker (default when `docker info` works) or process
#   --out DIR          where history.jsonl, faults.jsonl, summary.json and
#                      report.html go (default: a new directory under /tmp)
#   --unsafe-clock-rate-ppm PPM
#                      UNSAFE, to show the checker catches real bugs: every
#                      node's lease clock runs PPM parts per million fast
#                      (far beyond the 1% drift bound)
#   --expect-violation exit 0 only if the checker DID find a violation
#
# Process backend ports: LEASEHOLD_RAFT_PORT (17101) and LEASEHOLD_API_PORT
# (17001); give two concurrent runs different ports and a different
# LEASEHOLD_CHAOS_GID_BASE.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
minutes=""
nemesis=all
seed=$RANDOM
backend=""
out=""
clients=6
resources=3
ttl_ms=3000
unsafe_ppm=0
expect_violation=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --nemesis) nemesis="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --backend) backend="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --resources) resources="$2"; shift 2 ;;
    --ttl-ms) ttl_ms="$2"; shift 2 ;;
    --unsafe-clock-rate-ppm) unsafe_ppm="$2"; shift 2 ;;
    --expect-violation) expect_violation=1; shift ;;
    -h | --help) usage ;;
    *) echo "run.sh: unknown option '$1' (run.sh --help)" >&2; exit 2 ;;
  esac
done
[ -n "$minutes" ] || usage
if [ -z "$backend" ]; then
  if docker info >/dev/null 2>&1; then backend=docker; else backend=process; fi
fi
out="${out:-$(mktemp -d /tmp/leasehold-chaos.XXXXXX)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log() { echo "run.sh: $*" >&2; }
command -v iptables >/dev/null || { log "installing iptables"; apt-get install -y iptables >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y iptables >/dev/null; }; }

case "$nemesis" in
  all | *clock*)
    if [ "$backend" = process ] && ! ls /usr/lib/x86_64-linux-gnu/faketime/libfaketime* >/dev/null 2>&1; then
      log "installing libfaketime (clock nemesis)"
      apt-get install -y libfaketime >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y libfaketime >/dev/null; }
    fi ;;
esac

log "building the workload/checker (release)"
(cd "$root" && cargo build --release --locked -p leasehold-chaos -p leasehold-cli >&2)
# Run copies, so a rebuild during a long run does not swap binaries under it.
mkdir -p "$out/bin"
cp "$root/target/release/leasehold-chaos" "$root/target/release/leasehold" "$out/bin/"
chaos="$out/bin/leasehold-chaos"
export LEASEHOLD_CLI="$out/bin/leasehold"
export LEASEHOLD_CHAOS_BACKEND="$backend"

compose=(docker-compose -f "$root/cluster/docker/compose.yml")
teardown() {
  set +e
  "$here/nemesis.sh" heal-all >>"$out/faults.jsonl" 2>/dev/null
  if [ "$backend" = docker ]; then
    "${compose[@]}" logs --no-color >"$out/cluster.log" 2>&1
    "${compose[@]}" down -v >/dev/null 2>&1
  else
    "$here/proc-down.sh" >/dev/null 2>&1
  fi
}
trap teardown EXIT

if [ "$backend" = docker ]; then
  log "building the image"
  "$root/cluster/docker/build.sh" >&2
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  if [ "$unsafe_ppm" != 0 ]; then
    # compose.yml passes these on as each node's test-only lease clock rate.
    for i in ${LEASEHOLD_NODES:-1 2 3}; do export "LEASEHOLD_NODE${i}_CLOCK_RATE_PPM=$unsafe_ppm"; done
  fi
  "${compose[@]}" up -d >&2
  endpoints=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
else
  export LEASEHOLD_DATA_DIR="$out/data"
  export LEASEHOLD_RAFT_PORT="${LEASEHOLD_RAFT_PORT:-17101}" LEASEHOLD_API_PORT="${LEASEHOLD_API_PORT:-17001}"
  export LEASEHOLD_BIN="$out/bin/leasehold"
  if [ "$unsafe_ppm" != 0 ]; then
    export LEASEHOLD_SERVER_ARGS="--unsafe-test-clock-rate-ppm $unsafe_ppm"
  fi
  rm -rf "$LEASEHOLD_DATA_DIR"
  "$here/proc-up.sh" >&2
  endpoints="127.0.0.1:$LEASEHOLD_API_PORT,127.0.0.1:$((LEASEHOLD_API_PORT + 1)),127.0.0.1:$((LEASEHOLD_API_PORT + 2))"
fi
"$here/nemesis.sh" wait-healthy 60 >&2

seconds=$(python3 -c "print(int(float('$minutes') * 60) + 15)")
log "backend=$backend seed=$seed minutes=$minutes nemesis=$nemesis unsafe_clock_rate_ppm=$unsafe_ppm out=$out"
"$chaos" workload --endpoints "$endpoints" --clients "$clients" --resources "$resources" \
  --seconds "$seconds" --ttl-ms "$ttl_ms" --seed "$seed" --liveness-seconds 60 \
  --out "$out/history.jsonl" 2>"$out/workload.log" &
workload=$!
"$here/schedule.sh" --minutes "$minutes" --nemesis "$nemesis" --seed "$seed" \
  >"$out/faults.jsonl" 2>"$out/schedule.log" || log "schedule ended with status $? (see schedule.log)"
"$here/nemesis.sh" heal-all >>"$out/faults.jsonl" 2>>"$out/schedule.log" || true
log "faults done; waiting for the workload's liveness phase"
if ! wait "$workload"; then
  log "the workload failed (workload.log):"
  tail -n 5 "$out/workload.log" >&2
  exit 2
fi

title="Leasehold chaos run: $backend, $minutes min, nemesis $nemesis, seed $seed"
[ "$unsafe_ppm" != 0 ] && title="$title, UNSAFE lease clock +$unsafe_ppm ppm"
set +e
"$chaos" check "$out/history.jsonl" "$out/faults.jsonl" --report "$out/report.html" \
  --title "$title" >"$out/summary.json"
rc=$?
set -e
python3 - "$out/summary.json" <<'PY' >&2
import json, sys
s = json.load(open(sys.argv[1]))
ops = s["ops"]
print("operations:", ", ".join(f"{k}={v}" for k, v in sorted(ops.items())))
print("faults:", ", ".join(f"{k}={v}" for k, v in sorted(s["faults"].items())) or "none")
print(f"intervals checked: {s['holds']}, fenced writes: {s['register_writes']}")
print(f"violations: {len(s['violations'])}")
for v in s["violations"][:10]:
    print(f"  {v['rule']}: {v['detail']}")
PY
log "report: $out/report.html"
if [ "$expect_violation" = 1 ]; then
  [ "$rc" = 1 ] && { log "violation found, as expected"; exit 0; }
  log "expected a violation, found none"; exit 1
fi
exit "$rc"

#!/usr/bin/env bash
# A random, reproducible schedule of faults on a running cluster: each fault,
# then its heal after a hold time, then a quiet gap; everything is healed on
# exit (also on Ctrl-C or an error). Prints the fault log (one JSON line per
# fault and heal, with "step") on stdout; progress goes to stderr.
#
#   schedule.sh --minutes N [--nemesis all|kill,pause,...] [--seed S] [options]
#
# Options:
#   --minutes N        planned length (fractions allowed); the run stops
#                      starting faults once N minutes have passed
#   --nemesis LIST     all, or a comma list of: kill pause partition split
#                      wipe clock killall (default all: every one the backend
#                      supports)
#   --seed S           the same seed, options and backend give the same
#                      sequence of faults, targets and times (default: random,
#                      printed on stderr)
#   --hold LO:HI       seconds a fault lasts before its heal (default 3:10)
#   --gap LO:HI        seconds between a heal and the next fault (default 2:6)
#   --leader-share P   share of node faults aimed at the current leader
#                      (default 0.5; the others hit a seeded random node)
#   --clock-rates LIST clock rates to draw from (default 0.995,1.005,0.992,1.008:
#                      within the default drift bound of 1%; add e.g. 1.5 to
#                      go beyond it)
#   --no-wait          do not wait (up to 60 s) for a healthy cluster after
#                      each gap
#   --dry-run          print the planned schedule as JSONL and exit
#
# Heals: kill -> restart, killall -> restart all, pause -> resume,
# partition/split -> heal, clock -> clock NODE 1, wipe -> none (it restarts).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

minutes=""
nemesis=all
seed=""
hold=3:10
gap=2:6
leader_share=0.5
clock_rates=0.995,1.005,0.992,1.008
wait_healthy=1
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --nemesis) nemesis="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --hold) hold="$2"; shift 2 ;;
    --gap) gap="$2"; shift 2 ;;
    --leader-share) leader_share="$2"; shift 2 ;;
    --clock-rates) clock_rates="$2"; shift 2 ;;
    --no-wait) wait_healthy=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage ;;
    *) die "unknown option '$1' (schedule.sh --help)" ;;
  esac
done
[ -n "$minutes" ] || usage
[ -n "$seed" ] || seed="$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"

case "$CHAOS_BACKEND" in
  docker) supported="kill pause partition split wipe killall clock membership" ;;
  process) supported="kill pause partition split wipe killall clock membership" ;;
  *) die "LEASEHOLD_CHAOS_BACKEND must be docker or process" ;;
esac
if [ "$nemesis" = all ]; then
  kinds="$supported"
else
  kinds="${nemesis//,/ }"
  for k in $kinds; do
    case " $supported " in *" $k "*) ;; *) die "nemesis '$k' not supported by the $CHAOS_BACKEND backend (supported: $supported)" ;; esac
  done
fi

# The plan depends only on the seed, the options and the node list.
plan="$("$CHAOS_PY" - "$seed" "$minutes" "$kinds" "$hold" "$gap" "$leader_share" "$clock_rates" "${LEASEHOLD_NODES:-1 2 3}" <<'PY'
import json, random, sys
seed, minutes, kinds, hold, gap, share, rates, nodes = sys.argv[1:9]
rng = random.Random(int(seed) if seed.isdigit() else seed)
kinds = kinds.split()
nodes = [int(n) for n in nodes.split()]
hlo, hhi = (float(x) for x in hold.split(":"))
glo, ghi = (float(x) for x in gap.split(":"))
share = float(share)
rates = [r for r in rates.split(",") if r]
total = float(minutes) * 60
t, step = 0.0, 0
while t < total:
    step += 1
    kind = rng.choice(kinds)
    target = "leader" if rng.random() < share else str(rng.choice(nodes))
    args = []
    if kind == "partition":
        args = [rng.choice(["--cut-clients", "--keep-clients"])]
    elif kind == "split":
        a, b = rng.sample(nodes, 2)
        target = "%d|%d" % (a, b)
    elif kind == "clock":
        args = [rng.choice(rates)]
    elif kind == "killall":
        target = "all"
    h = round(rng.uniform(hlo, hhi), 1)
    g = round(rng.uniform(glo, ghi), 1)
    print(json.dumps({"step": step, "at_s": round(t, 1), "fault": kind, "target": target,
                      "args": args, "hold_s": h, "gap_s": g}, separators=(",", ":")))
    t += h + g
PY
)"

if [ "$dry_run" = 1 ]; then
  echo "$plan"
  exit 0
fi

load_backend
be_check
nem="$here/nemesis.sh"
log "backend=$CHAOS_BACKEND seed=$seed minutes=$minutes nemesis=${kinds// /,} steps=$(echo "$plan" | wc -l)"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  unset LEASEHOLD_CHAOS_STEP
  log "healing everything"
  "$nem" heal-all || log "heal-all failed: heal by hand (nemesis.sh heal-all)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run ARGS...: one nemesis call; its JSON goes to stdout, its node to $hit.
run() {
  local out
  if out="$("$nem" "$@")"; then
    [ -z "$out" ] || echo "$out"
    hit="$(echo "$out" | tail -n 1 | "$CHAOS_PY" -c 'import json,sys
try: print(json.loads(sys.stdin.read()).get("node") or "")
except ValueError: print("")')"
    return 0
  fi
  log "step $LEASEHOLD_CHAOS_STEP: nemesis.sh $* failed"
  return 1
}

# A sleep that a trapped signal interrupts at once (bash runs traps only
# after a foreground child ends, but `wait` returns early).
nap() {
  sleep "$1" &
  wait $! || true
}

start="$(date +%s)"
limit="$("$CHAOS_PY" -c 'import sys; print(int(float(sys.argv[1]) * 60))' "$minutes")"
while read -r line; do
  read -r step kind target args h g < <("$CHAOS_PY" -c '
import json, sys
p = json.loads(sys.argv[1])
print(p["step"], p["fault"], p["target"], " ".join(p["args"]) or "-", p["hold_s"], p["gap_s"])' "$line")
  [ "$args" = - ] && args=""
  if [ $(($(date +%s) - start)) -ge "$limit" ]; then
    log "time is up before step $step"
    break
  fi
  export LEASEHOLD_CHAOS_STEP="$step"
  log "step $step: $kind $target $args (hold ${h}s, gap ${g}s)"
  hit=""
  case "$kind" in
    kill) ok=1; run kill "$target" || ok="" ;;
    killall) ok=1; run kill all || ok="" ;;
    pause) ok=1; run pause "$target" || ok="" ;;
    partition) ok=1; run partition "$target" ${args:+"$args"} || ok="" ;;
    split) ok=1; run partition split "$target" || ok="" ;;
    wipe) ok=1; run wipe "$target" || ok="" ;;
    clock) ok=1; run clock "$target" ${args:+"$args"} || ok="" ;;
    membership) ok=1; run membership remove "$target" || ok="" ;;
  esac
  nap "$h"
  if [ -n "$ok" ]; then
    case "$kind" in
      kill) [ -z "$hit" ] || run restart "$hit" || true ;;
      killall) run restart all || true ;;
      pause) [ -z "$hit" ] || run resume "$hit" || true ;;
      partition | split) run heal || true ;;
      clock) [ -z "$hit" ] || run clock "$hit" 1 || true ;;
      membership) run membership restore || true ;;
      wipe) ;;
    esac
  fi
  nap "$g"
  if [ "$wait_healthy" = 1 ] && chaos_cli >/dev/null; then
    "$nem" wait-healthy 60 || log "step $step: cluster not healthy 60 s after the heal"
  fi
done <<<"$plan"
log "schedule done after $(($(date +%s) - start)) s"

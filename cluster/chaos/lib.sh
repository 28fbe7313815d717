# Shared helpers of the chaos scripts (sourced, not run).
#
# Provides: the monotonic clock (mono_ns), the JSON fault log (emit), the
# `leasehold` CLI used to find the leader (status_json, find_leader), target
# resolution (resolve_target) and the backend selection (load_backend).

shopt -s inherit_errexit

CHAOS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHAOS_ROOT="$(cd "$CHAOS_DIR/../.." && pwd)"
CHAOS_BACKEND="${LEASEHOLD_CHAOS_BACKEND:-docker}"
# The chaos clusters run plaintext (nodes start with --plaintext): the
# `leasehold` CLI used here must not pick up a CA that cluster/up.sh left in
# ./.leasehold-data/tls.
export LEASEHOLD_PLAINTEXT=true

# Python only reads the clock and writes JSON. /usr/bin/python3 starts in
# ~30 ms; a pyenv shim in PATH takes ~250 ms, so prefer the system one.
if [ -n "${LEASEHOLD_PYTHON:-}" ]; then
  CHAOS_PY="$LEASEHOLD_PYTHON"
elif [ -x /usr/bin/python3 ]; then
  CHAOS_PY=/usr/bin/python3
else
  CHAOS_PY=python3
fi

die() { echo "chaos: $*" >&2; exit 1; }
log() { echo "chaos: $*" >&2; }

# CLOCK_MONOTONIC in nanoseconds: the clock the servers' `Instant` reads
# (containers share the host kernel's monotonic clock; there is no time
# namespace here), so fault times compare directly with a client history
# recorded on this machine.
mono_ns() { "$CHAOS_PY" -c 'import time; print(time.monotonic_ns())'; }

# emit FAULT NODE T_BEGIN_NS [key=value ...]
# Prints one JSON line on stdout. t_begin_ns was read before the action
# started, t_ns is read after it returned: the fault took effect in between.
# NODE: a node id, or "-" for none (JSON null). A value that parses as JSON
# (number, list, object, true/false/null) is kept as such, else a string.
emit() {
  local fault="$1" node="$2" t_begin="$3"
  shift 3
  "$CHAOS_PY" - "$fault" "$node" "$t_begin" "$CHAOS_BACKEND" "$@" <<'PY'
import json, os, sys, time
t_ns = time.monotonic_ns()
fault, node, t_begin, backend = sys.argv[1:5]
def val(s):
    try:
        return json.loads(s)
    except ValueError:
        return s
detail = {}
for kv in sys.argv[5:]:
    if not kv:
        continue
    k, _, v = kv.partition("=")
    detail[k] = val(v)
rec = {
    "t_ns": t_ns,
    "fault": fault,
    "node": None if node in ("", "-") else val(node),
    "detail": detail,
    "t_begin_ns": int(t_begin),
    "backend": backend,
}
if os.environ.get("LEASEHOLD_CHAOS_TARGET"):
    rec["target"] = val(os.environ["LEASEHOLD_CHAOS_TARGET"])
if os.environ.get("LEASEHOLD_CHAOS_STEP"):
    rec["step"] = int(os.environ["LEASEHOLD_CHAOS_STEP"])
print(json.dumps(rec, separators=(",", ":")), flush=True)
PY
}

# The `leasehold` binary used as a client (status). LEASEHOLD_CLI overrides.
chaos_cli() {
  local c
  for c in "${LEASEHOLD_CLI:-}" \
    "$CHAOS_ROOT/target/x86_64-unknown-linux-gnu/release/leasehold" \
    "$CHAOS_ROOT/target/release/leasehold" \
    "$CHAOS_ROOT/target/debug/leasehold" \
    "$(command -v leasehold 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" status --help >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# set_voters IDS...: makes exactly these nodes the voters (joint consensus,
# through `leasehold membership`); prints "voters=..." for the fault line.
set_voters() {
  local cli n args=()
  cli="$(chaos_cli)" || die "no leasehold CLI with a membership command"
  for n in "$@"; do args+=(--voter "$(be_member_spec "$n")"); done
  "$cli" membership "${args[@]}" --endpoints "$(be_endpoints)" --timeout 40s >/dev/null 2>&1 \
    || die "membership change to {$*} failed"
  echo "voters=$(echo "$@" | tr ' ' ',')"
}

# status_json: one JSON object per endpoint (`leasehold status --output json`).
status_json() {
  local cli
  cli="$(chaos_cli)" || return 1
  "$cli" status --output json --timeout "${LEASEHOLD_CHAOS_STATUS_TIMEOUT:-2s}" \
    --endpoints "$(be_endpoints)" 2>/dev/null || true
}

# find_leader: the id of the node that says it is leader (highest term if
# several do, e.g. a stale leader on the minority side); empty if none.
find_leader() {
  status_json | "$CHAOS_PY" -c '
import json, sys
best = None
for line in sys.stdin:
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("role") == "leader" and (best is None or v["term"] > best["term"]):
        best = v
print(best["node_id"] if best else "")'
}

# healthy: every node answers, all of them are in one term and name one
# leader, and that leader says it is leader and serves (not
# waiting_for_quorum: a leader whose Raft core died stays there). Prints a
# one-line summary; exit 1 if not healthy.
healthy() {
  local n
  n="$(be_nodes | wc -w)"
  status_json | "$CHAOS_PY" -c '
import json, sys
want = int(sys.argv[1])
views = []
for line in sys.stdin:
    try:
        views.append(json.loads(line))
    except ValueError:
        pass
ok = [v for v in views if "node_id" in v]
leaders = {v.get("leader_id") for v in ok}
roles = {v["node_id"]: v["role"] for v in ok}
lid = next(iter(leaders)) if len(leaders) == 1 else None
serving = {v["node_id"]: v.get("serving") for v in ok}
terms = sorted({v["term"] for v in ok})
good = (len(ok) == want and lid is not None and roles.get(lid) == "leader"
        and serving.get(lid) not in (None, "waiting_for_quorum", "follower", "unspecified")
        and len(terms) == 1)
print("leader=%s (%s) answered=%d/%d terms=%s" % (lid, serving.get(lid), len(ok), want, terms))
sys.exit(0 if good else 1)' "$n"
}

# resolve_target SPEC: a node id from N | leader | follower | random.
# Prints "ID HOW" (HOW says how it was chosen).
resolve_target() {
  local spec="$1" nodes leader pick
  read -r -a nodes <<<"$(be_nodes)"
  case "$spec" in
    '' | random)
      echo "${nodes[RANDOM % ${#nodes[@]}]} random"
      ;;
    leader | follower)
      leader=""
      if chaos_cli >/dev/null; then leader="$(find_leader)"; fi
      if [ -z "$leader" ]; then
        echo "${nodes[RANDOM % ${#nodes[@]}]} random(no-leader-found)"
      elif [ "$spec" = leader ]; then
        echo "$leader leader"
      else
        local others=()
        for pick in "${nodes[@]}"; do [ "$pick" = "$leader" ] || others+=("$pick"); done
        echo "${others[RANDOM % ${#others[@]}]} follower(leader=$leader)"
      fi
      ;;
    *)
      for pick in "${nodes[@]}"; do
        if [ "$pick" = "$spec" ]; then echo "$spec given"; return 0; fi
      done
      die "unknown node '$spec' (nodes: ${nodes[*]}; or leader|follower|random)"
      ;;
  esac
}

load_backend() {
  case "$CHAOS_BACKEND" in
    docker) source "$CHAOS_DIR/backend-docker.sh" ;;
    process) source "$CHAOS_DIR/backend-process.sh" ;;
    *) die "LEASEHOLD_CHAOS_BACKEND must be docker or process, not '$CHAOS_BACKEND'" ;;
  esac
}

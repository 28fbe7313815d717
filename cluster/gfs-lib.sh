# Helpers of the GFS demo and chaos scripts (sourced, not run): start,
# stop, kill, pause and restart the masters and chunkservers of a
# `leasehold-gfs` cluster as plain processes on 127.0.0.1.
#
# State lives in $GFS_RUN: cmd-NAME (the process's command line, one
# argument per line, so it restarts exactly as started), pid-NAME, NAME.log.
# Names: m1, m2 (masters), cs1..csN (chunkservers).

# gfs_record NAME ARGS...: remembers NAME's command line.
gfs_record() {
  local name="$1"
  shift
  printf '%s\n' "$@" >"$GFS_RUN/cmd-$name"
}

# gfs_start NAME: starts NAME from its recorded command line.
gfs_start() {
  local name="$1" args=()
  mapfile -t args <"$GFS_RUN/cmd-$name"
  setsid "${args[@]}" >>"$GFS_RUN/$name.log" 2>&1 </dev/null &
  echo "$!" >"$GFS_RUN/pid-$name"
  # Not a job of this shell: no "Killed" notice when a fault kills it.
  disown "$!"
}

gfs_pid() { cat "$GFS_RUN/pid-$1" 2>/dev/null || true; }

# gfs_running NAME: the process exists and is NAME's (not a recycled pid).
gfs_running() {
  local pid
  pid="$(gfs_pid "$1")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--id $1 "
}

gfs_kill() { gfs_running "$1" && kill -KILL "$(gfs_pid "$1")"; rm -f "$GFS_RUN/pid-$1"; }
gfs_pause() { gfs_running "$1" && kill -STOP "$(gfs_pid "$1")"; }
gfs_resume() { gfs_running "$1" && kill -CONT "$(gfs_pid "$1")"; }

# gfs_term NAME: SIGCONT + SIGTERM, SIGKILL after 5 s.
gfs_term() {
  local pid
  gfs_running "$1" || return 0
  pid="$(gfs_pid "$1")"
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$GFS_RUN/pid-$1"
}

# gfs_status: the elected master's status (JSON lines), empty if none.
gfs_status() { "$GFS_BIN" status --masters "$GFS_MASTERS" 2>/dev/null || true; }

# gfs_elected: the elected master's id, empty if none.
gfs_elected() {
  gfs_status | head -n 1 | "${GFS_PY:-python3}" -c '
import json, sys
for line in sys.stdin:
    v = json.loads(line)
    print(v["master"] if v.get("is_master") else "")' 2>/dev/null || true
}

# gfs_primary_of_some_chunk: "CHUNK SERVER_ID VERSION" of one chunk with a
# primary (the first in name order), empty if none.
gfs_primary_of_some_chunk() {
  gfs_status | tail -n +2 | "${GFS_PY:-python3}" -c '
import json, sys
for line in sys.stdin:
    v = json.loads(line)
    prim = v.get("primary_id")
    if prim:
        print(v["chunk"], prim, v["version"])
        break' 2>/dev/null || true
}

# gfs_settled SECONDS: waits until every chunk the elected master knows has
# a primary with a full replica set (a quiet end before checking).
gfs_settled() {
  local limit="$1" start
  start="$(date +%s)"
  while [ $(($(date +%s) - start)) -lt "$limit" ]; do
    if gfs_status | "${GFS_PY:-python3}" -c '
import json, sys
lines = [json.loads(l) for l in sys.stdin if l.strip()]
if not lines or not lines[0].get("is_master"):
    sys.exit(1)
head, chunks = lines[0], lines[1:]
full = [c for c in chunks if len(c["replicas"]) >= 3]
sys.exit(0 if head["chunks_known"] == len(chunks) == len(full) else 1)'; then
      return 0
    fi
    sleep 1
  done
  return 1
}

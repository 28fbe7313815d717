# Process backend of the nemeses (sourced by nemesis.sh and proc-up.sh): a
# cluster of plain `leasehold server` processes on 127.0.0.1 started by
# cluster/chaos/proc-up.sh. Every be_* function prints the fault's detail as
# key=value lines.
#
# State in $LEASEHOLD_DATA_DIR (default ./.leasehold-data, as cluster/up.sh):
#   cluster.env   ports, group ids and binary of this cluster (from proc-up.sh)
#   cmd-I         node I's full command line, one argument per line
#   pids          "ID PID" lines (the format of cluster/up.sh: down.sh and
#                 status.sh work on it too)
#   node-I/       node I's data; node-I.log its output
#   clock-I       present while node I runs under libfaketime: its clock rate
#
# Partitions: every node runs with its own group id (setpriv --regid), so
# iptables can tell which node opened a loopback connection (-m owner
# --gid-owner, OUTPUT chain). Cutting the link a-b drops every packet that
# node a sends to node b's Raft or API port and vice versa. Matching on
# ports alone cannot do it: all nodes share 127.0.0.1, and a dropped
# `--dport/--sport RAFT_a` leaves node a's own outgoing connections (a
# leader's AppendEntries to the others) working. Host clients (other group
# ids) still reach every node unless --cut-clients is given. Every rule
# carries the comment leasehold-chaos-RAFTPORT, and heal deletes exactly
# the rules with that comment.

P_DATA="${LEASEHOLD_DATA_DIR:-$CHAOS_ROOT/.leasehold-data}"
P_LOADED=0

p_load() {
  [ "$P_LOADED" = 1 ] && return 0
  [ -f "$P_DATA/cluster.env" ] ||
    die "process backend: no $P_DATA/cluster.env (start nodes with cluster/chaos/proc-up.sh, same LEASEHOLD_DATA_DIR)"
  # shellcheck disable=SC1091
  source "$P_DATA/cluster.env"
  P_TAG="leasehold-chaos-$RAFT_PORT"
  P_LOADED=1
}

p_raft_port() { echo $((RAFT_PORT + $1 - 1)); }
p_api_port() { echo $((API_PORT + $1 - 1)); }
p_gid() { echo $((GID_BASE + $1)); }

p_pid() { awk -v id="$1" '$1 == id { print $2 }' "$P_DATA/pids" 2>/dev/null | tail -n 1; }

# The state letter of node I's process (R, S, T, ...), empty if it is gone.
# A zombie counts as gone.
p_proc_state() {
  local pid st
  pid="$(p_pid "$1")"
  [ -n "$pid" ] || return 0
  [ -r "/proc/$pid/stat" ] || return 0
  # The node's own process: guard against a recycled pid.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "server --id $1 " || return 0
  st="$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
  [ "$st" = Z ] || echo "$st"
}

p_ipt() { iptables -w "$@"; }
p_need_iptables() {
  command -v iptables >/dev/null || die "partitions need iptables (as root: apt-get install -y iptables)"
}

# p_start I: runs node I's recorded command line in its own session, under
# libfaketime if clock-I says so, and records its pid.
p_start_node() {
  local i="$1" args=() pre=(env) rate pid
  mapfile -t args <"$P_DATA/cmd-$i"
  if [ -f "$P_DATA/clock-$i" ]; then
    rate="$(cat "$P_DATA/clock-$i")"
    pre+=("LD_PRELOAD=$(p_faketime_lib)" "FAKETIME=+0 x$rate")
  fi
  # p_start_node I join: `leasehold server --join` (never found a cluster),
  # for a node whose data was just wiped.
  [ "${2:-}" != join ] || pre+=("LEASEHOLD_JOIN=true")
  # setsid: not in the caller's process group, so a Ctrl-C of a schedule does
  # not reach restarted nodes. (setsid does not fork here: the child of `&`
  # in a shell without job control is no group leader, so $! is the node.)
  setsid "${pre[@]}" "${args[@]}" >>"$P_DATA/node-$i.log" 2>&1 </dev/null &
  pid=$!
  # Until the exec, /proc/PID/cmdline is still the shell's.
  local n
  for n in $(seq 40); do
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "server --id $i " && break
    sleep 0.025
  done
  {
    grep -v "^$i " "$P_DATA/pids" 2>/dev/null || true
    echo "$i $pid"
  } >"$P_DATA/pids.tmp"
  mv "$P_DATA/pids.tmp" "$P_DATA/pids"
  echo "$pid"
}

p_wait_gone() {
  local i="$1" n
  for n in $(seq 100); do
    [ -n "$(p_proc_state "$i")" ] || return 0
    sleep 0.05
  done
  return 1
}

p_faketime_lib() {
  local l
  for l in "${LEASEHOLD_FAKETIME_LIB:-}" \
    /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 \
    /usr/lib/faketime/libfaketimeMT.so.1 \
    /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1; do
    if [ -n "$l" ] && [ -f "$l" ]; then echo "$l"; return 0; fi
  done
  die "clock: libfaketime not found (as root: apt-get install -y libfaketime)"
}

be_nodes() { p_load; echo "$NODES"; }

# The member spec ID=RAFT_ADDR,API_ADDR the cluster knows node I by.
be_member_spec() { p_load; echo "$1=127.0.0.1:$(p_raft_port "$1"),127.0.0.1:$(p_api_port "$1")"; }

be_endpoints() {
  p_load
  local i out=()
  for i in $NODES; do out+=("127.0.0.1:$(p_api_port "$i")"); done
  (IFS=,; echo "${out[*]}")
}

be_check() {
  p_load
  local i
  for i in $NODES; do [ -f "$P_DATA/cmd-$i" ] || die "no $P_DATA/cmd-$i"; done
}

be_running() { p_load; local s; s="$(p_proc_state "$1")"; [ -n "$s" ]; }
be_paused() { p_load; [ "$(p_proc_state "$1")" = T ]; }
be_skewed() { p_load; [ -f "$P_DATA/clock-$1" ]; }

be_kill() {
  p_load
  local pid
  pid="$(p_pid "$1")"
  be_running "$1" || die "kill: node $1 is not running"
  kill -KILL "$pid"
  p_wait_gone "$1" || die "kill: node $1 (pid $pid) did not die"
  echo "pid=$pid"
  echo "signal=KILL"
}

be_start() {
  p_load
  if be_running "$1"; then
    echo "pid=$(p_pid "$1")"
    echo "already_running=true"
    return 0
  fi
  echo "pid=$(p_start_node "$1")"
  if be_skewed "$1"; then echo "clock_rate=$(cat "$P_DATA/clock-$1")"; fi
}

be_pause() {
  p_load
  be_running "$1" || die "pause: node $1 is not running"
  kill -STOP "$(p_pid "$1")"
  echo "pid=$(p_pid "$1")"
  echo "signal=STOP"
}

be_resume() {
  p_load
  be_running "$1" || die "resume: node $1 is not running"
  kill -CONT "$(p_pid "$1")"
  echo "pid=$(p_pid "$1")"
  echo "signal=CONT"
}

# p_cut A B: no packet from node A to B's ports, nor from B to A's.
p_cut() {
  local a="$1" b="$2" x y
  for x in "$a $b" "$b $a"; do
    read -r x y <<<"$x"
    p_ipt -I OUTPUT 1 -o lo -p tcp -m owner --gid-owner "$(p_gid "$x")" \
      -m multiport --dports "$(p_raft_port "$y"),$(p_api_port "$y")" \
      -m comment --comment "$P_TAG" -j DROP
  done
}

be_isolate() {
  p_load
  p_need_iptables
  local n="$1" j clients=false
  if [ "${2:-}" = --cut-clients ]; then clients=true; fi
  for j in $NODES; do [ "$j" = "$n" ] || p_cut "$n" "$j"; done
  if [ "$clients" = true ]; then
    p_ipt -I INPUT 1 -i lo -p tcp --dport "$(p_api_port "$n")" \
      -m comment --comment "$P_TAG" -j DROP
  fi
  echo "mode=isolate"
  echo "mechanism=iptables owner gid + ports"
  echo "clients_cut=$clients"
}

be_split() {
  p_load
  p_need_iptables
  local a b x y bridges=() i
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  for x in "${a[@]}"; do for y in "${b[@]}"; do p_cut "$x" "$y"; done; done
  for i in $NODES; do
    case " ${a[*]} ${b[*]} " in *" $i "*) ;; *) bridges+=("$i") ;; esac
  done
  echo "mode=split"
  echo "groups=[[$(IFS=,; echo "${a[*]}")],[$(IFS=,; echo "${b[*]}")]]"
  echo "bridges=[$(IFS=,; echo "${bridges[*]}")]"
  echo "mechanism=iptables owner gid + ports"
}

be_heal() {
  p_load
  local chain rule n=0
  if command -v iptables >/dev/null; then
    for chain in OUTPUT INPUT; do
      while read -r rule; do
        [ -n "$rule" ] || continue
        # Our rules hold no quoted words, so word splitting rebuilds them.
        # shellcheck disable=SC2086
        p_ipt ${rule/#-A/-D}
        n=$((n + 1))
      done < <(p_ipt -S "$chain" 2>/dev/null | grep -- "--comment $P_TAG" || true)
    done
  fi
  echo "rules_removed=$n"
}

be_wipe() {
  p_load
  local n="$1" pid
  pid="$(p_pid "$n")"
  if be_running "$n"; then
    kill -KILL "$pid"
    p_wait_gone "$n" || die "wipe: node $n (pid $pid) did not die"
  fi
  rm -rf "$P_DATA/node-$n"
  echo "old_pid=${pid:-null}"
  echo "data_dir=$P_DATA/node-$n"
  # Pristine, told to join: it waits to be added back (nemesis.sh removed
  # it from the membership before and adds it after).
  echo "pid=$(p_start_node "$n" join)"
  echo "join=true"
  echo "restarted=true"
}

# Clock rate: restart node N (SIGTERM, graceful) under libfaketime, whose
# FAKETIME="+0 xRATE" makes every clock the process reads, CLOCK_MONOTONIC
# included, run RATE times as fast as real time (sleeps and timed waits are
# scaled the same way). RATE 1 restarts it on the real clock.
be_clock() {
  p_load
  local n="$1" rate="${2:-}" pid
  [ -n "$rate" ] || die "clock: give a rate, e.g. clock $n 1.005 (1 resets)"
  "$CHAOS_PY" -c 'import sys; r = float(sys.argv[1]); sys.exit(0 if 0 < r < 100 else 1)' "$rate" ||
    die "clock: bad rate '$rate'"
  if "$CHAOS_PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) == 1 else 1)' "$rate"; then
    rm -f "$P_DATA/clock-$n"
  else
    p_faketime_lib >/dev/null
    echo "$rate" >"$P_DATA/clock-$n"
  fi
  pid="$(p_pid "$n")"
  if be_running "$n"; then
    be_paused "$n" && kill -CONT "$pid"
    kill -TERM "$pid"
    if ! p_wait_gone "$n"; then
      kill -KILL "$pid"
      p_wait_gone "$n" || die "clock: node $n (pid $pid) did not stop"
    fi
  fi
  echo "rate=$rate"
  echo "old_pid=${pid:-null}"
  echo "pid=$(p_start_node "$n")"
  echo "mechanism=$([ -f "$P_DATA/clock-$n" ] && echo "libfaketime FAKETIME=+0 x$rate" || echo "real clock")"
  echo "restarted=true"
}

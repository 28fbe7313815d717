#!/usr/bin/env bash
# One fault (or its heal) on a running Leasehold cluster; prints one JSON line
# per fault on stdout (format: cluster/chaos/README.md).
#
#   nemesis.sh FAULT [TARGET] [ARGS]
#
# TARGET: a node id | leader | follower | random (default random). leader and
# follower ask every node's Status (`leasehold status --output json`); with no
# leader found (or no CLI with `status`), a random node is taken and the JSON
# says so in detail.chosen.
#
# Faults:
#   kill TARGET|all               SIGKILL (docker kill -s KILL); all: every node
#   restart TARGET|all            start a killed node again (no-op if running)
#   pause TARGET                  SIGSTOP (docker pause: cgroup freeze)
#   resume TARGET|all             SIGCONT (docker unpause)
#   partition TARGET [--cut-clients|--keep-clients]
#                                 isolate TARGET from the other nodes; host
#                                 clients lose the isolated node (--cut-clients,
#                                 docker's default) or still reach every node
#                                 (--keep-clients, the process default)
#   partition split 'A|B'         no traffic between groups A and B, e.g. '1|2,3';
#                                 a node in neither group (e.g. 3 in '1|2') keeps
#                                 its links to both sides
#   heal                          remove every partition
#   wipe TARGET                   remove TARGET from the membership, kill it, delete
#                                 its data, start it pristine with --join (it
#                                 waits to be added), add it back (it catches up
#                                 as a learner, then votes again): a node that
#                                 lost its log must not vote meanwhile
#   clock TARGET RATE             run the node's clocks RATE x real time (restarts
#                                 the node; docker: its lease clock only); RATE 1 resets
#   membership remove TARGET      make every node but TARGET the voters (during load)
#   membership restore            make every node a voter again
#   heal-all                      resume paused, heal partitions, reset clocks,
#                                 start stopped nodes (one line per action)
# Helpers (no fault line): leader | status | healthy | wait-healthy [SECONDS]
#
# Backend: LEASEHOLD_CHAOS_BACKEND=docker (default; cluster/docker/compose.yml)
# or process (cluster/chaos/proc-up.sh, same LEASEHOLD_DATA_DIR).
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
load_backend

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
fault="$1"
shift

# act FAULT NODE be_function ARGS...: runs the action between two clock
# readings and prints its JSON line.
act() {
  local f="$1" node="$2" t0 out details=()
  shift 2
  t0="$(mono_ns)"
  # inherit_errexit (lib.sh): any failing step aborts the action, and the
  # failed assignment then ends this script (set -e) without a JSON line.
  out="$("$@")"
  mapfile -t details <<<"$out"
  emit "$f" "$node" "$t0" "${details[@]}" ${chosen:+"chosen=$chosen"}
}

# pick SPEC: sets node and chosen.
pick() {
  local r
  r="$(resolve_target "${1:-random}")"
  node="${r%% *}"
  chosen="${r#* }"
  export LEASEHOLD_CHAOS_TARGET="${1:-random}"
}

node=""
chosen=""
# Present while a membership nemesis removed a node (heal-all restores it).
membership_marker="${LEASEHOLD_DATA_DIR:-${TMPDIR:-/tmp}}/leasehold-chaos.$CHAOS_BACKEND.membership-removed"
case "$fault" in
  kill | pause | wipe)
    be_check
    if [ "$fault" = kill ] && [ "${1:-}" = all ]; then
      # The whole cluster down at once (time model: restarts of the whole cluster).
      export LEASEHOLD_CHAOS_TARGET=all
      for n in $(be_nodes); do
        if be_running "$n"; then act kill "$n" be_kill "$n"; fi
      done
      exit 0
    fi
    pick "${1:-random}"
    case "$fault" in
      kill) act kill "$node" be_kill "$node" ;;
      pause) act pause "$node" be_pause "$node" ;;
      wipe)
        keep=()
        for n in $(be_nodes); do [ "$n" = "$node" ] || keep+=("$n"); done
        act membership "$node" set_voters "${keep[@]}"
        touch "$membership_marker"
        act wipe "$node" be_wipe "$node"
        # shellcheck disable=SC2046
        act membership-restore - set_voters $(be_nodes)
        rm -f "$membership_marker"
        ;;
    esac
    ;;
  restart | resume)
    be_check
    if [ "${1:-}" = all ]; then
      export LEASEHOLD_CHAOS_TARGET=all
      for n in $(be_nodes); do
        if [ "$fault" = restart ] && ! be_running "$n"; then act restart "$n" be_start "$n"; fi
        if [ "$fault" = resume ] && be_paused "$n"; then act resume "$n" be_resume "$n"; fi
      done
    else
      [ $# -ge 1 ] || die "$fault: which node? (an id or all)"
      pick "$1"
      if [ "$fault" = restart ]; then act restart "$node" be_start "$node"; else act resume "$node" be_resume "$node"; fi
    fi
    ;;
  partition)
    be_check
    if [ "${1:-}" = split ]; then
      spec="${2:-}"
      [[ "$spec" =~ ^[0-9]+(,[0-9]+)*\|[0-9]+(,[0-9]+)*$ ]] || die "partition split: want 'A|B' like '1|2,3', got '$spec'"
      export LEASEHOLD_CHAOS_TARGET="$spec"
      side_a="${spec%%|*}"
      side_b="${spec#*|}"
      act partition - be_split "${side_a//,/ }" "${side_b//,/ }"
    else
      pick "${1:-random}"
      case "${2:-}" in
        '' | --cut-clients | --keep-clients) ;;
        *) die "partition: unknown option '$2' (--cut-clients | --keep-clients)" ;;
      esac
      act partition "$node" be_isolate "$node" "${2:-}"
    fi
    ;;
  heal)
    be_check
    act heal - be_heal
    ;;
  clock)
    be_check
    [ $# -ge 2 ] || die "clock: usage: clock TARGET RATE (e.g. clock leader 1.005; RATE 1 resets)"
    pick "$1"
    act clock "$node" be_clock "$node" "$2"
    ;;
  membership)
    be_check
    case "${1:-}" in
      remove)
        pick "${2:-random}"
        keep=()
        for n in $(be_nodes); do [ "$n" = "$node" ] || keep+=("$n"); done
        act membership "$node" set_voters "${keep[@]}"
        touch "$membership_marker"
        ;;
      restore)
        # shellcheck disable=SC2046
        act membership-restore - set_voters $(be_nodes)
        rm -f "$membership_marker"
        ;;
      *) die "membership: remove TARGET | restore" ;;
    esac
    ;;
  heal-all)
    be_check
    export LEASEHOLD_CHAOS_TARGET=all
    for n in $(be_nodes); do
      if be_paused "$n"; then act resume "$n" be_resume "$n"; fi
    done
    act heal - be_heal
    for n in $(be_nodes); do
      if be_skewed "$n"; then act clock "$n" be_clock "$n" 1; fi
    done
    for n in $(be_nodes); do
      if ! be_running "$n"; then act restart "$n" be_start "$n"; fi
    done
    if [ -f "$membership_marker" ]; then
      # shellcheck disable=SC2046
      act membership-restore - set_voters $(be_nodes)
      rm -f "$membership_marker"
    fi
    ;;
  leader)
    find_leader
    ;;
  status)
    cli="$(chaos_cli)" || die "no leasehold CLI with a status command (set LEASEHOLD_CLI)"
    "$cli" status --timeout 2s --endpoints "$(be_endpoints)"
    ;;
  healthy)
    healthy
    ;;
  wait-healthy)
    limit="${1:-60}"
    start="$(date +%s)"
    until summary="$(healthy)"; do
      if [ $(($(date +%s) - start)) -ge "$limit" ]; then
        log "not healthy after ${limit}s: $summary"
        exit 1
      fi
      sleep 0.5
    done
    log "healthy after $(($(date +%s) - start))s: $summary"
    ;;
  -h | --help | help) usage ;;
  *) die "unknown fault '$fault' (nemesis.sh --help)" ;;
esac

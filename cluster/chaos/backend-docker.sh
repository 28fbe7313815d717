# Docker backend of the nemeses (sourced by nemesis.sh): the cluster of
# cluster/docker/compose.yml, acted on from the host with the docker CLI.
# Every be_* function prints the fault's detail as key=value lines.
#
# Environment (all optional):
#   LEASEHOLD_NODES             node ids (default "1 2 3")
#   LEASEHOLD_DOCKER_PREFIX     container name prefix (default leasehold-node)
#   LEASEHOLD_DOCKER_NETWORK    the cluster network (default leasehold-net)
#   LEASEHOLD_COMPOSE_FILE      compose file (default cluster/docker/compose.yml)
#   LEASEHOLD_COMPOSE_PROJECT   compose project (default leasehold)
#   LEASEHOLD_API_PORT          host port of node 1's API on 127.0.0.1 (default 7001)
#   LEASEHOLD_DOCKER_SUBNET_PREFIX  as in compose.yml (default 172.30.71)

D_NODES="${LEASEHOLD_NODES:-1 2 3}"
D_PREFIX="${LEASEHOLD_DOCKER_PREFIX:-leasehold-node}"
D_NET="${LEASEHOLD_DOCKER_NETWORK:-leasehold-net}"
D_COMPOSE_FILE="${LEASEHOLD_COMPOSE_FILE:-$CHAOS_ROOT/cluster/docker/compose.yml}"
D_PROJECT="${LEASEHOLD_COMPOSE_PROJECT:-leasehold}"
D_API_PORT="${LEASEHOLD_API_PORT:-7001}"
# Node I's fixed address on the cluster network (compose.yml): PREFIX.1I.
D_IP_PREFIX="${LEASEHOLD_DOCKER_SUBNET_PREFIX:-172.30.71}"

command -v docker >/dev/null || die "docker backend: no docker CLI"

d_compose() {
  if command -v docker-compose >/dev/null; then
    docker-compose -f "$D_COMPOSE_FILE" -p "$D_PROJECT" "$@"
  else
    docker compose -f "$D_COMPOSE_FILE" -p "$D_PROJECT" "$@"
  fi
}

d_name() { echo "$D_PREFIX$1"; }
d_state() {
  local v
  v="$(docker inspect -f "{{.State.$2}}" "$(d_name "$1")" 2>/dev/null)" || v=missing
  echo "$v"
}
d_networks() {
  docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$(d_name "$1")" 2>/dev/null || true
}
d_on_net() { case " $(d_networks "$1") " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }

be_nodes() { echo "$D_NODES"; }

# The member spec ID=RAFT_ADDR,API_ADDR the cluster knows node I by.
be_member_spec() { echo "$1=node$1:7101,node$1:7001"; }

# The published client API ports: the host reaches containers only there.
be_endpoints() {
  local i out=()
  for i in $D_NODES; do out+=("127.0.0.1:$((D_API_PORT + i - 1))"); done
  (IFS=,; echo "${out[*]}")
}

be_check() {
  local i
  for i in $D_NODES; do
    [ "$(d_state "$i" Status)" != missing ] ||
      die "no container $(d_name "$i") (start the cluster: cluster/docker/build.sh && docker-compose -f cluster/docker/compose.yml up -d)"
  done
}

be_running() { [ "$(d_state "$1" Running)" = true ]; }
be_paused() { [ "$(d_state "$1" Paused)" = true ]; }
# The lease clock rate (ppm) node N's container was created with: the
# container's own environment is the record, so nothing is left behind when
# a run is torn down.
d_ppm() {
  local v
  v="$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$(d_name "$1")" 2>/dev/null |
    sed -n 's/^LEASEHOLD_UNSAFE_TEST_CLOCK_RATE_PPM=//p')"
  echo "${v:-0}"
}
# The rate node N runs at when no clock fault is on: what the run started it
# with (run.sh --unsafe-clock-rate-ppm exports LEASEHOLD_NODEi_CLOCK_RATE_PPM).
d_base_ppm() {
  local var="LEASEHOLD_NODE${1}_CLOCK_RATE_PPM"
  echo "${!var:-0}"
}
be_skewed() { [ "$(d_ppm "$1")" != "$(d_base_ppm "$1")" ]; }
# d_recreate N PPM [join]: replace node N's container (graceful stop, same
# volume, same address) by one whose lease clock runs at PPM; with `join`,
# the new container runs `leasehold server --join` (LEASEHOLD_JOIN=true).
d_recreate() {
  local n="$1" ppm="$2" join=false
  [ "${3:-}" != join ] || join=true
  if be_paused "$n"; then docker unpause "$(d_name "$n")" >/dev/null; fi
  (
    export "LEASEHOLD_NODE${n}_CLOCK_RATE_PPM=$ppm" "LEASEHOLD_NODE${n}_JOIN=$join"
    d_compose up -d --no-deps --force-recreate "node$n" >&2
  )
}

be_kill() {
  local c
  c="$(d_name "$1")"
  docker kill -s KILL "$c" >/dev/null
  echo "container=$c"
  echo "signal=KILL"
}

be_start() {
  local c
  c="$(d_name "$1")"
  if be_running "$1"; then
    echo "container=$c"
    echo "already_running=true"
    return 0
  fi
  docker start "$c" >/dev/null
  d_reapply "$1"
  echo "container=$c"
}

be_pause() {
  local c
  c="$(d_name "$1")"
  docker pause "$c" >/dev/null
  echo "container=$c"
  echo "mechanism=cgroup-freezer"
}

be_resume() {
  local c
  c="$(d_name "$1")"
  docker unpause "$c" >/dev/null
  echo "container=$c"
}

# Two partition mechanisms:
#  - isolate N (default, --cut-clients): the container leaves the cluster
#    network (docker network disconnect); heal reconnects it with its alias
#    and fixed address, so open connections resume. The published API port
#    goes through that network, so host clients lose the node as well: the
#    isolated node has no clients on its side.
#  - split 'A|B' and isolate N --keep-clients: iptables DROP rules inside the
#    containers' network namespaces (nsenter -n, the host's iptables) on the
#    peers' fixed addresses. Only the cut links go down: a node in neither
#    group (a bridge) keeps both sides, and host clients (they arrive from the
#    bridge gateway through the published port) still reach every node.
#    Moving containers between networks instead leaves peers holding
#    connections to addresses that vanished: measured here, such links stay
#    dead until HTTP/2 keepalive gives up (~20 s), both at the split and at
#    the heal. Rules live in the container's namespace, so a node that is
#    restarted gets them again from the state file (be_start, be_wipe).
D_STATE="${LEASEHOLD_CHAOS_STATE_DIR:-${TMPDIR:-/tmp}}/leasehold-chaos.$D_NET.cuts"
D_TAG=leasehold-chaos

d_ip() { echo "$D_IP_PREFIX.$((10 + $1))"; }
d_nsenter() {
  local pid
  pid="$(docker inspect -f '{{.State.Pid}}' "$(d_name "$1")")"
  [ "$pid" != 0 ] || return 1
  shift
  nsenter -t "$pid" -n "$@"
}
# d_drop N PEER: node N drops every packet from and to PEER's address.
d_drop() {
  be_running "$1" || return 0
  d_nsenter "$1" iptables -w -I INPUT 1 -s "$(d_ip "$2")" -m comment --comment "$D_TAG" -j DROP
  d_nsenter "$1" iptables -w -I OUTPUT 1 -d "$(d_ip "$2")" -m comment --comment "$D_TAG" -j DROP
}
d_cut() {
  if ! command -v nsenter >/dev/null || ! command -v iptables >/dev/null; then
    die "partition: needs nsenter and iptables on the host (as root: apt-get install -y iptables util-linux)"
  fi
  d_drop "$1" "$2"
  d_drop "$2" "$1"
  echo "$1 $2" >>"$D_STATE"
}
# Re-applies the recorded cuts of node N (its namespace is new after a restart).
d_reapply() {
  local a b
  [ -s "$D_STATE" ] || return 0
  while read -r a b; do
    [ "$a" = "$1" ] && d_drop "$a" "$b"
    [ "$b" = "$1" ] && d_drop "$b" "$a"
  done <"$D_STATE"
  return 0
}
d_unrule() {
  local chain rule n=0
  be_running "$1" || { echo 0; return 0; }
  for chain in INPUT OUTPUT; do
    while read -r rule; do
      [ -n "$rule" ] || continue
      # shellcheck disable=SC2086
      d_nsenter "$1" iptables -w ${rule/#-A/-D}
      n=$((n + 1))
    done < <(d_nsenter "$1" iptables -w -S "$chain" 2>/dev/null | grep -- "--comment $D_TAG" || true)
  done
  echo "$n"
}

be_isolate() {
  local c n="$1" i
  c="$(d_name "$n")"
  if [ "${2:-}" = --keep-clients ]; then
    for i in $D_NODES; do [ "$i" = "$n" ] || d_cut "$n" "$i"; done
    echo "mode=isolate"
    echo "mechanism=iptables in the containers' netns"
    echo "clients_cut=false"
    return 0
  fi
  docker network disconnect "$D_NET" "$c"
  echo "container=$c"
  echo "mode=isolate"
  echo "mechanism=docker network disconnect $D_NET"
  echo "clients_cut=true"
}

# be_split "A..." "B...": no traffic between a node of A and a node of B; a
# node in neither group keeps its links to both (a bridge).
be_split() {
  local a b x y i bridges=()
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  for x in "${a[@]}"; do for y in "${b[@]}"; do d_cut "$x" "$y"; done; done
  for i in $D_NODES; do
    case " ${a[*]} ${b[*]} " in *" $i "*) ;; *) bridges+=("$i") ;; esac
  done
  echo "mode=split"
  echo "groups=[[$(IFS=,; echo "${a[*]}")],[$(IFS=,; echo "${b[*]}")]]"
  echo "bridges=[$(IFS=,; echo "${bridges[*]}")]"
  echo "mechanism=iptables in the containers' netns"
  echo "clients_cut=false"
}

be_heal() {
  local i reconnected=() rules=0 r
  for i in $D_NODES; do
    [ "$(d_state "$i" Status)" != missing ] || continue
    if ! d_on_net "$i" "$D_NET"; then
      # Same alias and address as compose gave it: peers' open connections
      # to it resume, and its host port is published through it again.
      docker network connect --alias "node$i" --ip "$(d_ip "$i")" "$D_NET" "$(d_name "$i")"
      reconnected+=("$i")
    fi
    r="$(d_unrule "$i")"
    rules=$((rules + r))
  done
  rm -f "$D_STATE"
  echo "reconnected=[$(IFS=,; echo "${reconnected[*]}")]"
  echo "rules_removed=$rules"
}

# Wipe: kill, delete the container and its named volume, recreate both.
# The caller (nemesis.sh) removed the node from the membership first and
# adds it back after. The node comes back pristine with --join
# (LEASEHOLD_JOIN=true): it never initializes a cluster; it asks its peers,
# finds a cluster that no longer lists it and waits to be added.
be_wipe() {
  local n="$1" c vol ppm
  c="$(d_name "$n")"
  vol="$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Name}}{{end}}{{end}}' "$c")"
  [ -n "$vol" ] || die "wipe: $c has no volume on /data"
  ppm="$(d_ppm "$n")"
  if be_paused "$n"; then docker unpause "$c" >/dev/null; fi
  if be_running "$n"; then docker kill -s KILL "$c" >/dev/null; fi
  d_compose rm -f -v "node$n" >&2
  docker volume rm "$vol" >/dev/null
  # The new container keeps the old one's clock setting.
  d_recreate "$n" "$ppm" join
  d_reapply "$n"
  echo "container=$c"
  echo "volume=$vol"
  echo "join=true"
  echo "restarted=true"
}

# Clock rate: the image's binary is static (no LD_PRELOAD of libfaketime) and
# containers share the host's monotonic clock, so the container is recreated
# (graceful stop, same volume and address) with the server's test-only lease
# clock skew, LEASEHOLD_UNSAFE_TEST_CLOCK_RATE_PPM = (RATE - 1) x 10^6. It
# scales what the node's lease decisions see (leader lease, session
# deadlines, expiry, failover grace), not Raft's own timers. RATE 1 resets.
be_clock() {
  local n="$1" rate="${2:-}" ppm
  [ -n "$rate" ] || die "clock: give a rate, e.g. clock $n 1.005 (1 resets)"
  ppm="$("$CHAOS_PY" -c '
import sys
r = float(sys.argv[1])
ppm = round((r - 1) * 1e6)
sys.exit(1) if not (0 < r < 100 and abs(ppm) <= 900000) else print(ppm)' "$rate")" ||
    die "clock: bad rate '$rate' (0.1 to 1.9)"
  # RATE 1 means back to the rate the run started the node with.
  [ "$ppm" != 0 ] || ppm="$(d_base_ppm "$n")"
  d_recreate "$n" "$ppm"
  d_reapply "$n"
  echo "container=$(d_name "$n")"
  echo "rate=$rate"
  echo "rate_ppm=$ppm"
  echo "mechanism=$([ "$ppm" = 0 ] && echo "real clock" || echo "lease clock skew LEASEHOLD_UNSAFE_TEST_CLOCK_RATE_PPM=$ppm")"
  echo "restarted=true"
}

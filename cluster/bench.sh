#!/usr/bin/env bash
# Leasehold vs etcd, side by side, one command:
#
#   cluster/bench.sh            full run (about 15 minutes): writes
#                               docs/bench/RESULTS.md and docs/bench/RESULTS.svg
#   cluster/bench.sh --smoke    1 s rows, few sessions, debug build, results
#                               in target/bench-smoke/ (CI runs this)
#
# Any other arguments go to `leasehold-bench compare` (see its --help), e.g.
#   cluster/bench.sh --seconds 10 --only open,lock
#
# What it does: installs etcd (Debian's etcd-server) if `etcd` is missing,
# builds `leasehold` and `leasehold-bench --features etcd` (etcd-client's
# build needs protoc: PROTOC is pointed at the protoc-bin-vendored binary
# the workspace already uses), then runs the bench, which starts a 3-node
# Leasehold cluster (client ports 7401-7403, Raft 7501-7503, metrics
# 7601-7603) and a 3-node etcd (client 23791-23793, peer 23801-23803) on
# 127.0.0.1 with data in a temp dir (the Leasehold nodes with --auth-open:
# a loopback benchmark, no tokens), and stops them at the end. The pids it
# started are listed in <temp dir>/pids; the exit trap kills those still
# running (and only those) if the bench itself dies.
#
# The full run requires etcd. With --smoke, an etcd that cannot be
# installed is skipped (said so on stderr) and the Leasehold side still runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

smoke=0
args=()
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    *) args+=("$a") ;;
  esac
done

log() { echo "bench.sh: $*" >&2; }

# --- etcd -----------------------------------------------------------------
install_etcd() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  command -v apt-get >/dev/null 2>&1 || { log "no apt-get: install etcd 3.4 yourself"; return 1; }
  # The smoke run (CI) gives a slow mirror a minute per step, then skips.
  local limit=300
  [ "$smoke" = 1 ] && limit=60
  log "etcd not found: installing Debian's etcd-server"
  export DEBIAN_FRONTEND=noninteractive
  timeout "$limit" ${sudo[@]+"${sudo[@]}"} apt-get update -qq >&2 || true
  timeout "$limit" ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq etcd-server >&2
}
etcd_bin="$(command -v etcd || true)"
if [ -z "$etcd_bin" ]; then
  if install_etcd; then
    etcd_bin="$(command -v etcd || true)"
  fi
fi
if [ -z "$etcd_bin" ]; then
  if [ "$smoke" = 1 ]; then
    log "etcd could not be installed: SKIPPING the etcd side of the smoke run"
  else
    log "etcd could not be installed; the full run requires it"
    exit 1
  fi
fi

# --- build ----------------------------------------------------------------
if [ "$smoke" = 1 ]; then profile_flag=(); profile=debug; else profile_flag=(--release); profile=release; fi
log "building leasehold ($profile)"
nice cargo build ${profile_flag[@]+"${profile_flag[@]}"} --locked -p leasehold-cli >&2

features=()
if [ -n "$etcd_bin" ]; then
  features=(--features etcd)
  if [ -z "${PROTOC:-}" ]; then
    # The protoc binary of protoc-bin-vendored (already downloaded by the
    # build above: leasehold-proto compiles with it).
    case "$(uname -m)" in
      x86_64) arch=linux-x86_64 ;;
      aarch64 | arm64) arch=linux-aarch_64 ;;
      *) arch="linux-$(uname -m)" ;;
    esac
    manifest="$(cargo metadata --format-version 1 --locked 2>/dev/null |
      grep -o "\"manifest_path\":\"[^\"]*protoc-bin-vendored-$arch-[^\"]*\"" | head -n 1 |
      sed 's/^"manifest_path":"//; s/"$//')"
    PROTOC="$(dirname "$manifest")/bin/protoc"
    [ -x "$PROTOC" ] || { log "no vendored protoc for $arch (set PROTOC)"; exit 1; }
    export PROTOC
  fi
fi
log "building leasehold-bench ($profile${features[*]:+, ${features[*]}})"
nice cargo build ${profile_flag[@]+"${profile_flag[@]}"} --locked -p leasehold-bench \
  ${features[@]+"${features[@]}"} >&2

# --- run ------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/leasehold-bench.XXXXXX")"
cleanup() {
  # Only pids the bench recorded, only while they still run our binaries
  # with data in $work (a pid the OS reused for something else is spared).
  if [ -f "$work/pids" ]; then
    while read -r pid; do
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$work"; then
        kill -9 "$pid" 2>/dev/null || true
      fi
    done <"$work/pids"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dd_line="$(cd "$work" && dd if=/dev/zero of=ddtest bs=4k count=1000 oflag=dsync 2>&1 | tail -n 1; rm -f "$work/ddtest")"
machine="date:       $(date -u '+%Y-%m-%d %H:%M UTC')
commit:     $(git rev-parse --short HEAD 2>/dev/null || echo unknown)
nproc:      $(nproc)
cpu:        $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
memory:     $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
load:       $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, at start)
disk:       dd bs=4k count=1000 oflag=dsync in the data dir: $dd_line
etcd:       $([ -n "$etcd_bin" ] && "$etcd_bin" --version | head -n 1 || echo skipped)
leasehold:  target/$profile/leasehold ($profile build)"

bench_args=(compare --leasehold-bin "target/$profile/leasehold" --work-dir "$work" --machine "$machine")
if [ -n "$etcd_bin" ]; then bench_args+=(--etcd-bin "$etcd_bin"); else bench_args+=(--no-etcd); fi
if [ "$smoke" = 1 ]; then
  bench_args+=(--seconds 1 --repeats 1 --clients 4 --keepalive-sessions 50
    --failover-sessions 4 --memory-leases 500 --memory-ttl-s 3
    --out target/bench-smoke/RESULTS.md)
fi
"target/$profile/leasehold-bench" "${bench_args[@]}" ${args[@]+"${args[@]}"}
log "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Starts a local three-node Leasehold cluster as background processes on
# 127.0.0.1 and records their pids, so down.sh stops exactly those. Each
# node reads its sample config, cluster/config/nodeN.toml; flags override the
# data directory (and, with other ports, the addresses and peers).
#
# TLS: on first start a throwaway CA, node certificates (IP SAN 127.0.0.1)
# and a client certificate are generated into $LEASEHOLD_DATA_DIR/tls
# (`leasehold certs init`; reused on restart). Peers talk mutual TLS; client
# commands run from the repository root (or with LEASEHOLD_DATA_DIR set)
# find tls/ca.pem and tls/client.pem there without flags.
# Auth: on first start it makes a random admin token, writes it to
# $LEASEHOLD_DATA_DIR/admin.token (mode 0600) and starts every node with one
# principal, `admin`, holding its SHA-256. `leasehold` client commands run
# from the repository root (or with LEASEHOLD_DATA_DIR set) use that file
# when no --token is given. Later starts keep the token.
#
# Environment (all optional):
#   LEASEHOLD_DATA_DIR     data root (default: ./.leasehold-data)
#   LEASEHOLD_RAFT_PORT    first Raft peer port (default 7101; nodes use +0,+1,+2)
#   LEASEHOLD_API_PORT     first client API port (default 7001)
#   LEASEHOLD_METRICS_PORT first metrics/health HTTP port (default 7201)
#   LEASEHOLD_BIN          binary to run (default: build target/release/leasehold)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
data="${LEASEHOLD_DATA_DIR:-$root/.leasehold-data}"
raft_port="${LEASEHOLD_RAFT_PORT:-7101}"
api_port="${LEASEHOLD_API_PORT:-7001}"
metrics_port="${LEASEHOLD_METRICS_PORT:-7201}"
bin="${LEASEHOLD_BIN:-}"

if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked -p leasehold-cli >&2)
  bin="$root/target/release/leasehold"
fi
mkdir -p "$data"
if [ -f "$data/pids" ] && "$here/status.sh" >/dev/null 2>&1; then
  echo "a cluster from $data is already running (cluster/down.sh stops it)" >&2
  exit 1
fi
tls="$data/tls"
if [ ! -f "$tls/ca.pem" ]; then
  "$bin" certs init --dir "$tls" --node 1=127.0.0.1,localhost \
    --node 2=127.0.0.1,localhost --node 3=127.0.0.1,localhost --client client >/dev/null
  echo "generated a throwaway CA and certificates in $tls" >&2
fi

# The admin token: made once (32 random bytes as hex), kept across restarts.
token_file="$data/admin.token"
if [ ! -s "$token_file" ]; then
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$token_file.new" &&
    echo >>"$token_file.new" && mv "$token_file.new" "$token_file")
fi
chmod 600 "$token_file"
token_sha256="$(tr -d '\n' <"$token_file" | sha256sum | cut -d' ' -f1)"

# The samples use ports 7101-7103 and 7001-7003; other ports override them
# with flags (flags take precedence over the file).
port_flags() {
  [ "$raft_port" = 7101 ] && [ "$api_port" = 7001 ] && return 0
  local j
  for j in 1 2 3; do
    printf -- '--peer\n%s\n' "$j=127.0.0.1:$((raft_port + j - 1)),127.0.0.1:$((api_port + j - 1))"
  done
  printf -- '--raft-listen\n127.0.0.1:%s\n--api-listen\n127.0.0.1:%s\n' \
    "$((raft_port + $1 - 1))" "$((api_port + $1 - 1))"
}

: > "$data/pids"
for i in 1 2 3; do
  mapfile -t extra < <(port_flags "$i")
  "$bin" server --id "$i" --config "$here/config/node$i.toml" \
    --data-dir "$data/node-$i" ${extra[@]+"${extra[@]}"} \
    --auth-principal "admin:admin:$token_sha256" \
    --metrics-listen "127.0.0.1:$((metrics_port + i - 1))" \
    --tls-ca-cert "$tls/ca.pem" --tls-cert "$tls/node-$i.pem" --tls-key "$tls/node-$i-key.pem" \
    >>"$data/node-$i.log" 2>&1 &
  echo "$i $!" >> "$data/pids"
done
# Wait until every node listens, or report the one that died.
for i in 1 2 3; do
  pid=$(awk -v id="$i" '$1 == id { print $2 }' "$data/pids")
  port=$((api_port + i - 1))
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "node $i exited at startup; last log lines ($data/node-$i.log):" >&2
      tail -n 5 "$data/node-$i.log" >&2
      "$here/down.sh" >/dev/null 2>&1 || true
      exit 1
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done
echo "started 3 nodes (data and logs in $data):"
for i in 1 2 3; do
  echo "  node $i: raft 127.0.0.1:$((raft_port + i - 1))  api 127.0.0.1:$((api_port + i - 1))  metrics http://127.0.0.1:$((metrics_port + i - 1))/metrics"
done
echo "endpoints: 127.0.0.1:$api_port,127.0.0.1:$((api_port + 1)),127.0.0.1:$((api_port + 2))"
echo "TLS: CA $tls/ca.pem, client certificate $tls/client.pem (found by default from the repository root)"
echo "admin token: $token_file (client commands from $root use it; elsewhere: --token-file $token_file)"

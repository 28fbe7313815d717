#!/usr/bin/env bash
# Builds a statically linked `leasehold` binary and the image leasehold:dev
# (FROM scratch: no registry is needed).
#
#   cluster/docker/build.sh && docker-compose -f cluster/docker/compose.yml up -d
#
# Environment (all optional):
#   LEASEHOLD_IMAGE   image tag to build (default leasehold:dev)
#   SKIP_CARGO=1      reuse the binary already in target/x86_64-unknown-linux-gnu/release
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
image="${LEASEHOLD_IMAGE:-leasehold:dev}"
triple=x86_64-unknown-linux-gnu
bin="$root/target/$triple/release/leasehold"

if [ "${SKIP_CARGO:-0}" != 1 ]; then
  # --target keeps +crt-static off build scripts and proc-macros (which cannot
  # be static) and puts the output in its own directory.
  echo "building static $bin" >&2
  (cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked -p leasehold-cli --target "$triple" >&2)
fi
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

# A FROM-scratch image has no loader and no libc: the binary must be static.
desc="$(file -b "$bin")"
echo "file: $desc" >&2
case "$desc" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "error: $bin is not statically linked" >&2; exit 1 ;;
esac
if ldd_out="$(ldd "$bin" 2>&1)"; then :; fi
case "$ldd_out" in
  *"statically linked"* | *"not a dynamic executable"*) echo "ldd: $ldd_out" >&2 ;;
  *) echo "error: ldd lists shared libraries:" >&2; echo "$ldd_out" >&2; exit 1 ;;
esac

# Minimal build context: docker uploads only these two entries, never target/.
ctx="$(mktemp -d "${TMPDIR:-/tmp}/leasehold-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/leasehold"
mkdir "$ctx/data"
cp "$here/Dockerfile" "$ctx/Dockerfile"
docker build -t "$image" "$ctx" >&2
docker image ls "$image" >&2

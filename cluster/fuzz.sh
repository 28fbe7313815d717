#!/usr/bin/env bash
# Runs Leasehold's cargo-fuzz targets (crates/leasehold-fuzz, see
# docs/fuzzing.md) each for a bounded time; CI runs exactly this.
#
#   cluster/fuzz.sh                      every target, 60 s each
#   cluster/fuzz.sh --seconds 300 snapshot_decode store_records
#   cluster/fuzz.sh --sanitizer address  with AddressSanitizer (slower)
#
# Targets: request_validation apply_commands snapshot_decode store_records
# peer_messages. Needs the nightly toolchain (installed here with rustup
# when missing, and said so) and cargo-fuzz (`cargo install cargo-fuzz
# --locked` when missing, and said so).
#
# Each target starts from its committed seeds (crates/leasehold-fuzz/seeds/
# <target>) plus the corpus earlier runs grew (crates/leasehold-fuzz/corpus/
# <target>, not committed). Logs go to target/fuzz/<target>.log. Exits
# non-zero if any target crashes (panic, timeout of one input, out of
# memory): the crashing input is under crates/leasehold-fuzz/artifacts/
# <target>/, and `cargo +nightly fuzz run --fuzz-dir crates/leasehold-fuzz
# <target> <file>` replays it. Every crash becomes a unit test in the
# owning crate (docs/fuzzing.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

ALL_TARGETS=(request_validation apply_commands snapshot_decode store_records peer_messages)
# Longest time one input may take (s) before libFuzzer calls it a hang.
INPUT_TIMEOUT_S=10
# Largest input libFuzzer generates (bytes): room for a small snapshot.
INPUT_BYTES_MAX=8192
# Memory limit of a fuzzing process (MiB): an input that needs more is a
# finding (unbounded allocation from a length prefix).
RSS_LIMIT_MB=2048

seconds=60
sanitizer=none
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --sanitizer) sanitizer="${2:?--sanitizer needs a name}"; shift 2 ;;
    --sanitizer=*) sanitizer="${1#*=}"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
case "$seconds" in ''|*[!0-9]*|0) echo "fuzz.sh: --seconds must be a positive whole number, got '$seconds'" >&2; exit 2 ;; esac
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  case " ${ALL_TARGETS[*]} " in
    *" $t "*) ;;
    *) echo "fuzz.sh: unknown target '$t' (targets: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
  esac
done

log() { echo "fuzz.sh: $*" >&2; }

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  log "no nightly toolchain: installing it with rustup (cargo-fuzz needs nightly)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "cargo-fuzz not installed: installing it (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi

fuzz_dir=crates/leasehold-fuzz
# The fuzz crate has its own Cargo.lock: refuse to run if it is stale.
cargo +nightly fetch --locked --quiet --manifest-path "$fuzz_dir/Cargo.toml"
flags=(--fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer" --debug-assertions)
log "building ${#targets[@]} target(s) (release, debug assertions, sanitizer: $sanitizer)"
nice -n 10 cargo +nightly fuzz build "${flags[@]}"

mkdir -p target/fuzz
failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="$fuzz_dir/corpus/$t"
  mkdir -p "$corpus"
  log "$t: fuzzing for ${seconds} s"
  status=0
  nice -n 10 cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" "$fuzz_dir/seeds/$t" -- \
    -max_total_time="$seconds" -timeout="$INPUT_TIMEOUT_S" -max_len="$INPUT_BYTES_MAX" \
    -rss_limit_mb="$RSS_LIMIT_MB" -print_final_stats=1 \
    > "target/fuzz/$t.log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "target/fuzz/$t.log" | tail -1)"
  last="$(grep -E '^#[0-9]+' "target/fuzz/$t.log" | tail -1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
  units="$(find "$corpus" -type f | wc -l)"
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    summary+=("$(printf '%-20s CRASHED (exit %s) after %s executions; see target/fuzz/%s.log' "$t" "$status" "${execs:-?}" "$t")")
    log "$t: CRASHED; last lines of target/fuzz/$t.log:"
    tail -40 "target/fuzz/$t.log" >&2
  else
    summary+=("$(printf '%-20s ok  %10s executions  cov %6s  ft %6s  corpus %5s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$units")")
  fi
done

echo "== fuzz summary (${seconds} s per target, sanitizer $sanitizer)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs under $fuzz_dir/artifacts/)" >&2
  exit 1
fi

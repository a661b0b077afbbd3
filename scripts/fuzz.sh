#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: cargo fuzz (libFuzzer)
# with --sanitizer none (no nightly needed; panics, hangs and unbounded
# allocations are what it finds, Rust's checks do the rest).
#
#   scripts/fuzz.sh [SECONDS]      each target for SECONDS (default 20)
#
# New inputs go to a scratch corpus; the committed corpus (fuzz/corpus/) is
# read, never rewritten (grow it by hand: cargo fuzz cmin).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cd fuzz
SECS="${1:-20}"
T="${KMS_FUZZ_TARGET_DIR:-/var/tmp/kms-fuzz-target}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing: cargo install --locked cargo-fuzz" >&2
  exit 1
fi
for target in $(cargo fuzz list); do
  # The PKCS#11 target starts a live server in its first input.
  timeout=5
  [ "$target" = pkcs11_calls ] && timeout=60
  mkdir -p "corpus/$target"
  scratch=$(mktemp -d)
  log="$scratch.log"
  echo "fuzz: $target for ${SECS}s" >&2
  status=0
  cargo fuzz run --sanitizer none --target-dir "$T" "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout="$timeout" -print_final_stats=1 \
    > "$log" 2>&1 || status=$?
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|ERROR|panicked|SUMMARY" "$log" >&2 || true
  rm -rf "$scratch" "$log"
  if [ "$status" != 0 ]; then
    echo "fuzz: $target failed (exit $status; the input is in fuzz/artifacts/$target)" >&2
    exit 1
  fi
done

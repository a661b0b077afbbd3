#!/usr/bin/env bash
# Server time of the console's pages (BENCHMARKS.md, "Console"): an enclave
# of 100,000 keys (KMS_BENCH_KEYS to change) on a 3-node cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build -q -p kms-node --bin kms
cargo test -q -p kms-tests --test console -- --ignored --nocapture --exact console_render_times 2>&1 \
  | grep -E '^(\||console render)'

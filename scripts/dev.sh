#!/usr/bin/env bash
# The main job: a working KMS on an embedded default. Builds `kms` and runs
# `kms server --dev` (loopback, a data dir under the temp dir, an insecure
# development HSM key), printing the commands to try next.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kms-target}"
# --workspace: the same feature set as the tests, so RocksDB is built once.
cargo build --workspace --bin kms
exec "$CARGO_TARGET_DIR/debug/kms" server --dev "$@"

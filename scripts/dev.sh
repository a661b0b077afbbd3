#!/usr/bin/env bash
# The main job: a working KMS on an embedded default. Builds `kms` and runs
# `kms server --dev` (loopback, a data dir under the temp dir, an insecure
# development HSM key), printing the commands to try next.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
# --workspace: the feature set of the tests; ccache (scripts/env.sh) makes
# the other build shapes take RocksDB from the cache.
cargo build --workspace --bin kms
exec "$CARGO_TARGET_DIR/debug/kms" server --dev "$@"

#!/usr/bin/env bash
# A million keys in one enclave (tests/tests/scale.rs, `million_keys`): create,
# restart, list, status, join a node, restart sealed by SoftHSM2, with the
# targets of issue 13 asserted. About 4 minutes on two cores, so apart from
# the test command; its figures go in BENCHMARKS.md ("A million keys").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
. scripts/env.sh
cargo build --workspace --bin kms
cargo nextest run -p kms-tests --test scale --run-ignored only --no-capture "$@"

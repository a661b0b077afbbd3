#!/usr/bin/env bash
# Every test: formatting, lints, unit, property and integration tests (real
# `kms` processes on loopback, real clients).
# Arguments go to cargo nextest (e.g. a filter). A million keys, which takes
# minutes, is scripts/scale.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
. scripts/env.sh
cargo fmt --all -- --check
# kms-node's modules must stay layered: no import cycle between them.
python3 scripts/check-layers.py kms-node/src
# The operations files in ops/: alert rules and their promtool tests, the
# Grafana dashboard, the systemd unit, the p11-kit module file (no build; seconds).
scripts/check-ops.sh
cargo clippy --workspace --all-targets -- -D warnings
# Build every binary first: the integration tests run the `kms` binary.
cargo build --workspace --all-targets
# The partition tests create network namespaces, which needs root. Without
# it they are skipped explicitly (each prints SKIPPED), never silently.
if [ "$(id -u)" != 0 ] && [ -z "${KMS_TEST_SKIP_NETNS:-}" ]; then
  echo "test: not root: the network-partition tests will be SKIPPED (run as root to include them)" >&2
  export KMS_TEST_SKIP_NETNS=1
fi
cargo nextest run --workspace --no-fail-fast --failure-output final "$@"
# A short run of each fuzz target from the committed corpus (scripts/fuzz.sh).
scripts/fuzz.sh "${KMS_FUZZ_SECS:-20}"

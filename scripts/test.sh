#!/usr/bin/env bash
# Every test: formatting, lints, unit, property and integration tests (real
# `kms` processes on loopback, real clients).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kms-target}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Build every binary first: the integration tests run the `kms` binary.
cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast --failure-output final "$@"

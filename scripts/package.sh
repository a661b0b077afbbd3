#!/usr/bin/env bash
# Builds the Debian package `kms` with cargo-deb (docs/operations.md,
# "Install from the Debian package") and prints the .deb's path.
#
#   scripts/package.sh             dev profile: the binaries the tests build
#                                  ($CARGO_TARGET_DIR/debug); a quick package
#                                  for tests (tests/tests/package.rs)
#   scripts/package.sh --release   release profile ($CARGO_TARGET_DIR/release):
#                                  the package to ship
#
# Steps: build `kms` and libkms_pkcs11.so, generate the man pages and the
# shell completions with the `kms` just built (into
# $CARGO_TARGET_DIR/<profile>/package/; they are build output, not committed),
# then `cargo deb --no-build`, which packages what is there
# ([package.metadata.deb] in kms-node/Cargo.toml). The package goes to
# $CARGO_TARGET_DIR/debian/<dev|release>/. Needs cargo-deb
# (scripts/setup.sh --test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

profile=dev
case "${1:-}" in
  "") ;;
  --release) profile=release ;;
  *)
    echo "usage: scripts/package.sh [--release]" >&2
    exit 2
    ;;
esac
# cargo's output directory of the profile, and its flag.
if [ "$profile" = release ]; then dir=release build=(--release); else dir=debug build=(); fi

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: cargo-deb is missing: scripts/setup.sh --test (or cargo install --locked cargo-deb)" >&2
  exit 1
fi

# --workspace: the feature set scripts/dev.sh builds (and the tests use).
cargo build "${build[@]}" --workspace --bin kms >&2
cargo build "${build[@]}" -p pkcs11-module >&2

out="$CARGO_TARGET_DIR/$dir"
gen="$out/package"
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$out/kms" man --dir "$gen/man" >/dev/null
# -n: no name or time stamp in the .gz, so that a rebuild gives the same bytes.
gzip -9n "$gen"/man/*.1
"$out/kms" completions bash >"$gen/completions/kms"
"$out/kms" completions zsh >"$gen/completions/_kms"
"$out/kms" completions fish >"$gen/completions/kms.fish"

debs="$CARGO_TARGET_DIR/debian/$profile"
mkdir -p "$debs"
# --no-build: package the files built above. --profile: which of
# $CARGO_TARGET_DIR/{debug,release} the target/release/ asset paths mean.
# --fast (lighter compression) for the dev package, which only tests install.
fast=()
[ "$profile" = dev ] && fast=(--fast)
cargo deb -p kms-node --no-build --profile "$profile" "${fast[@]}" --output "$debs/" >"$gen/cargo-deb.out"
deb=$(tail -n 1 "$gen/cargo-deb.out")
[ -f "$deb" ] || { cat "$gen/cargo-deb.out" >&2; echo "package: cargo deb printed no package path" >&2; exit 1; }
echo "$deb"

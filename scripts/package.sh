#!/usr/bin/env bash
# Builds the Debian package `kms` with cargo-deb (docs/operations.md,
# "Install from the Debian package") and prints the .deb's path.
#
#   scripts/package.sh             dev profile: $CARGO_TARGET_DIR/debug, what
#                                  scripts/dev.sh and the tests build; a quick
#                                  package for tests
#   scripts/package.sh --release   release profile ($CARGO_TARGET_DIR/release):
#                                  the package to ship
#   --no-build                     package the binaries already built instead
#                                  of building them (tests/tests/package.rs:
#                                  the test run's own binaries, which a build
#                                  would replace under the other tests)
#
# Steps: build `kms` and libkms_pkcs11.so, generate the man pages and the
# shell completions with that `kms` (into $CARGO_TARGET_DIR/<profile>/package/;
# build output, not committed), then `cargo deb --no-build`, which packages
# what is there ([package.metadata.deb] in kms-node/Cargo.toml). The package
# goes to $CARGO_TARGET_DIR/debian/<dev|release>/. Needs cargo-deb
# (scripts/setup.sh --test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

profile=dev
build_first=1
for arg in "$@"; do
  case "$arg" in
    --release) profile=release ;;
    --no-build) build_first= ;;
    *)
      echo "usage: scripts/package.sh [--release] [--no-build]" >&2
      exit 2
      ;;
  esac
done
# cargo's output directory of the profile, and its flag.
if [ "$profile" = release ]; then dir=release build=(--release); else dir=debug build=(); fi

# The PKCS#11 module's path in [package.metadata.deb] names the multiarch
# directory of amd64 (cargo-deb's own multiarch support would also mark the
# package Multi-Arch, which a package holding /usr/bin/kms must not be).
arch=$(dpkg --print-architecture)
if [ "$arch" != amd64 ]; then
  echo "package: packages for amd64 only (x86_64-linux-gnu paths in kms-node/Cargo.toml), not $arch" >&2
  exit 1
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: cargo-deb is missing: scripts/setup.sh --test (or cargo install --locked cargo-deb --version '~3.8')" >&2
  exit 1
fi

out="$CARGO_TARGET_DIR/$dir"
if [ -n "$build_first" ]; then
  # --workspace: the feature set of scripts/dev.sh's `kms`.
  cargo build "${build[@]}" --workspace --bin kms >&2
  cargo build "${build[@]}" -p pkcs11-module >&2
fi
for f in kms libkms_pkcs11.so; do
  [ -f "$out/$f" ] || { echo "package: $out/$f is missing: build it first (or drop --no-build)" >&2; exit 1; }
done
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
# $CARGO_TARGET_DIR/{debug,release} the target/release/ asset paths of
# [package.metadata.deb] mean (cargo-deb finds $CARGO_TARGET_DIR through
# `cargo metadata`); cargo-deb 3.8 warns that the dev profile is not meant for
# releases, which the dev package is not. --fast (lighter compression) for the
# dev package, which only tests install.
fast=()
[ "$profile" = dev ] && fast=(--fast)
cargo deb -p kms-node --no-build --profile "$profile" "${fast[@]}" --output "$debs/" >"$gen/cargo-deb.out"
deb=$(tail -n 1 "$gen/cargo-deb.out")
[ -f "$deb" ] || { cat "$gen/cargo-deb.out" >&2; echo "package: cargo deb printed no package path" >&2; exit 1; }
echo "$deb"

# Sourced by the build scripts (dev.sh, test.sh, fuzz.sh, .ci/run): where
# builds go, so that RocksDB's C++ compiles once per machine.
#
# - One target directory outside the checkout, shared by every clone.
# - ccache in front of gcc/g++: cargo builds librocksdb-sys once per feature
#   shape (`cargo build --bin kms`, `cargo clippy`, `cargo build --all-targets`
#   and the fuzzers each resolve its build dependencies differently), and
#   each shape would compile RocksDB's 400 C++ files again (12-15 minutes on
#   two cores). With ccache the first shape compiles them and the others take
#   them from the cache in about a minute.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kms-target}"
if command -v ccache >/dev/null 2>&1 && [ -z "${KMS_NO_CCACHE:-}" ]; then
  export CCACHE_DIR="${CCACHE_DIR:-/var/tmp/kms-ccache}"
  export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-3G}"
  export CC="${CC:-ccache gcc}"
  export CXX="${CXX:-ccache g++}"
fi

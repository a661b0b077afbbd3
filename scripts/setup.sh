#!/usr/bin/env bash
# Installs the system packages the build (and, with --test, the tests) need,
# when they are missing. As root it uses apt-get; otherwise it prints the
# exact command to run.
#   scripts/setup.sh          build dependencies (clang/libclang for RocksDB's bindgen, ccache;
#                             OpenSSL headers and pkg-config for the openssl crate)
#   scripts/setup.sh --test   also what the tests use (SoftHSM2, OpenSC, GnuTLS tools,
#                             a JDK for keytool, Python's PyKCS11 and dilithium-py,
#                             OpenSSH client and server, the libp11 OpenSSL engine,
#                             Prometheus's promtool, systemd-analyze and p11-kit for
#                             scripts/check-ops.sh, adduser, man-db and curl for the
#                             package test; Chromium and chromedriver for the console's
#                             browser test; cargo-nextest, cargo-fuzz and cargo-deb)
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_libclang() { ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; }

have_cmd clang || need+=(clang)
have_libclang || need+=(libclang-dev)
have_cmd cc || need+=(gcc)
have_cmd g++ || need+=(g++)
# ccache: RocksDB's C++ compiles once, not once per cargo build shape (scripts/env.sh).
have_cmd ccache || need+=(ccache)
# openssl-sys finds the system OpenSSL (3.x) through pkg-config; the tests run the openssl CLI.
have_cmd pkg-config || need+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
have_cmd openssl || need+=(openssl)
if [ "${1:-}" = "--test" ]; then
  have_cmd softhsm2-util || need+=(softhsm2)
  have_cmd pkcs11-tool || need+=(opensc)
  have_cmd p11tool || need+=(gnutls-bin)
  # libp11's OpenSSL engine (openssl pkeyutl -engine pkcs11)
  dpkg -s libengine-pkcs11-openssl >/dev/null 2>&1 || need+=(libengine-pkcs11-openssl)
  have_cmd ip || need+=(iproute2)
  have_cmd keytool || need+=(default-jdk-headless)
  have_cmd python3 || need+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  # OpenSSH (ssh -I, ssh-keygen -D, ssh-agent) and a real sshd the tests start on loopback.
  have_cmd ssh || need+=(openssh-client)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  # The libp11 OpenSSL engine (openssl -engine pkcs11).
  ls /usr/lib/*/engines-3/pkcs11.so >/dev/null 2>&1 || need+=(libengine-pkcs11-openssl)
  # scripts/check-ops.sh: alert rules and their unit tests (promtool), the
  # systemd unit (systemd-analyze verify/security), the p11-kit module file.
  # tests/tests/prometheus.rs runs the Prometheus server itself.
  { have_cmd promtool && [ -x /usr/bin/prometheus ]; } || need+=(prometheus)
  have_cmd systemd-analyze || need+=(systemd)
  have_cmd p11-kit || need+=(p11-kit)
  # tests/tests/package.rs: installs the Debian package (which depends on
  # adduser), reads its man page with man, asks the node with curl (as the
  # probe tests do).
  [ -x /usr/sbin/adduser ] || need+=(adduser)
  have_cmd man || need+=(man-db)
  have_cmd curl || need+=(curl)
  # tests/tests/console_browser.rs: headless Chromium driven through chromedriver (WebDriver).
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing packages; run:" >&2
    echo "  sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

# PyKCS11 (PyPI) for the PKCS#11 module's consumer tests. A wheel needs
# nothing else; a source build needs swig and the Python headers.
if [ "${1:-}" = "--test" ] && ! python3 -c 'import PyKCS11' >/dev/null 2>&1; then
  echo "setup: installing PyKCS11 from PyPI" >&2
  pip_install() { python3 -m pip install --quiet "$@" PyKCS11 >/dev/null 2>&1; }
  if ! pip_install && ! pip_install --break-system-packages; then
    if [ "$(id -u)" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swig python3-dev >/dev/null
    fi
    pip_install || pip_install --break-system-packages || {
      echo "setup: cannot install PyKCS11: python3 -m pip install PyKCS11" >&2
      exit 1
    }
  fi
fi

# dilithium-py (PyPI, pure Python FIPS 204 ML-DSA): an independent check of
# the cluster's ML-DSA signatures.
if [ "${1:-}" = "--test" ] && ! python3 -c 'import dilithium_py.ml_dsa' >/dev/null 2>&1; then
  echo "setup: installing dilithium-py from PyPI" >&2
  python3 -m pip install --quiet dilithium-py >/dev/null 2>&1 ||
    python3 -m pip install --quiet --break-system-packages dilithium-py >/dev/null 2>&1 || {
      echo "setup: cannot install dilithium-py: python3 -m pip install dilithium-py" >&2
      exit 1
    }
fi

if ! have_cmd cargo; then
  echo "setup: cargo is missing; install Rust from https://rustup.rs" >&2
  exit 1
fi
if [ "${1:-}" = "--test" ] && ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
# cargo-deb: scripts/package.sh (the Debian package; tests/tests/package.rs).
# 3.8: the test packages the dev build (--profile dev), which cargo-deb 3.8
# accepts with a warning that a later release will refuse it.
if [ "${1:-}" = "--test" ] && ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.8\.'; then
  echo "setup: installing cargo-deb 3.8" >&2
  cargo install --locked cargo-deb --version '~3.8' >/dev/null
fi
if [ "${1:-}" = "--test" ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz (the fuzzers run on stable with --sanitizer none)" >&2
  cargo install --locked cargo-fuzz >/dev/null
fi

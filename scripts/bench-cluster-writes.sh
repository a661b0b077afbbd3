#!/usr/bin/env bash
# Replicated write throughput and latency of a three-node cluster, for one
# or more `kms` binaries measured alternately in the same run (A B A B ...),
# so that a change to the replication path is compared with its baseline on
# the same machine state. Default timing (100 ms heartbeat, 1 s election).
#
#   scripts/bench-cluster-writes.sh [SECONDS] [KMS_BINARY ...]
#       (default 10 s per row; default binary: the release build)
#
# Rows per binary and round: key creation with 1 client and with 64 clients
# on the leader, 64 clients on a follower (forwarded). Prints Markdown rows.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"; shift || true
T="${CARGO_TARGET_DIR:-/var/tmp/kms-target}"
BINS=("$@"); [ ${#BINS[@]} -gt 0 ] || BINS=("$T/release/kms")
ROUNDS="${ROUNDS:-2}"
WORK=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

measure() { # binary label
  local KMS=$1 label=$2 d="$WORK/$RANDOM"
  mkdir -p "$d"
  export KMS_HSM_KEY=$("$KMS" new-hsm-key) KMS_INSECURE=1
  export KMS_API_KEY=$("$KMS" --json identity --hsm | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  local pids=()
  for i in 1 2 3; do
    "$KMS" server --addr "127.0.0.1:746$i" "$d/n$i" > "$d/n$i.out" 2> "$d/n$i.log" &
    pids+=($!)
    for _ in $(seq 100); do grep -q "root API key" "$d/n$i.out" 2>/dev/null && break; sleep 0.1; done
  done
  export KMS_SERVER=https://127.0.0.1:7461
  "$KMS" add https://127.0.0.1:7462 >/dev/null
  "$KMS" add https://127.0.0.1:7463 >/dev/null
  "$KMS" add-enclave bench >/dev/null
  row() { # server, title, args
    local s=$1 title=$2; shift 2
    KMS_SERVER="$s" "$KMS" bench --json --enclave bench --duration "${DUR}s" "$@" 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_ms"]; print("| '"$label"' | '"$title"' | {:,} | {:.2f} | {:.2f} | {} |".format(int(d["ops_per_sec"]), l["p50"], l["p99"], d["errors"]))'
  }
  row https://127.0.0.1:7461 "key creation, 1 client" --op create --concurrency 1
  row https://127.0.0.1:7461 "key creation, 64 clients, leader" --op create --concurrency 64
  row https://127.0.0.1:7462 "key creation, 64 clients, follower" --op create --concurrency 64
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$d"
}

echo "| binary | workload | ops/s | p50 ms | p99 ms | errors |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for r in $(seq "$ROUNDS"); do
  for b in "${BINS[@]}"; do measure "$b" "$(basename "$(dirname "$(dirname "$b")")")/$(basename "$b") #$r"; done
done

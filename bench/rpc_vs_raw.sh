#!/usr/bin/env bash
# zmesh RPC (capnp dispatch, deferred-reply loop) vs a bare libzmq ROUTER echo,
# both in-process servers, same client code, same run.
#
#   bench/rpc_vs_raw.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/bin
seconds=${SECONDS_PER_RUN:-3}
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }

echo "| measure | raw libzmq | zmesh rpc | ratio |"
echo "|---|---:|---:|---:|"
for transport in tcp ipc; do
  raw=$("$bin/zmesh-bench" echo --server raw --transport "$transport" --seconds "$seconds" | grep '^echo')
  rpc=$("$bin/zmesh-bench" echo --server rpc --transport "$transport" --seconds "$seconds" 2>/dev/null | grep '^echo')
  for k in p50_us p99_us; do
    a=$(echo "$raw" | field $k); b=$(echo "$rpc" | field $k)
    printf "| round trip %s, 1 client, %s | %s µs | %s µs | %.2f× |\n" "$transport" "${k%_us}" "$a" "$b" \
      "$(echo "$b / $a" | bc -l)"
  done
done
for window in 1 8 64 256; do
  raw=$("$bin/zmesh-bench" echo --server raw --window "$window" --seconds "$seconds" | grep '^echo' | field calls_per_s)
  rpc=$("$bin/zmesh-bench" echo --server rpc --window "$window" --seconds "$seconds" 2>/dev/null | grep '^echo' |
    field calls_per_s)
  printf "| pipelined tcp, window %s | %s calls/s | %s calls/s | %.2f |\n" "$window" "$raw" "$rpc" \
    "$(echo "$rpc / $raw" | bc -l)"
done

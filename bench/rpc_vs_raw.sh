#!/usr/bin/env bash
# zmesh RPC (rpc::Connection calling rpc::Server's capnp dispatch) vs bare
# libzmq (DEALERs sending the same request frame to a ROUTER echo), both servers
# in-process with a libzmq context (and I/O thread) of their own, the same
# epoll loop on the client side, alternating runs; each figure is the median
# of ROUNDS runs.
#
#   bench/rpc_vs_raw.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/bin
seconds=${SECONDS_PER_RUN:-3}
rounds=${ROUNDS:-3}
source bench/lib.sh
need bc

# runs <args...>: ROUNDS alternating runs of each kind; their result lines
# go to $tmp/raw and $tmp/rpc.
runs() {
  : > "$tmp/raw"; : > "$tmp/rpc"
  for _ in $(seq "$rounds"); do
    for kind in raw rpc; do
      "$bin/zmesh-bench" echo --server "$kind" --client "$kind" --seconds "$seconds" "$@" 2>/dev/null |
        grep '^echo' >> "$tmp/$kind"
    done
  done
}
median() {  # $1: kind (raw|rpc), $2: key
  field "$2" < "$tmp/$1" | sort -g |
    awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "| measure | raw libzmq | zmesh rpc | ratio |"
echo "|---|---:|---:|---:|"
for transport in tcp ipc; do
  runs --transport "$transport"
  for k in p50_us p99_us; do
    a=$(median raw $k); b=$(median rpc $k)
    printf "| round trip %s, 1 client, %s | %s µs | %s µs | %.2f× |\n" "$transport" "${k%_us}" "$a" "$b" \
      "$(echo "$b / $a" | bc -l)"
  done
done
for window in 1 8 64 256; do
  runs --window "$window"
  a=$(median raw calls_per_s); b=$(median rpc calls_per_s)
  printf "| pipelined tcp, window %s | %s calls/s | %s calls/s | %.2f |\n" "$window" "$a" "$b" \
    "$(echo "$b / $a" | bc -l)"
done

#!/usr/bin/env bash
# zmesh RPC (rpc::Connection calling rpc::Server's capnp dispatch) vs bare
# libzmq (DEALERs sending the same request frame to a ROUTER echo), both servers
# in-process with a libzmq context (and I/O thread) of their own, the same
# epoll loop on the client side, alternating runs; each figure is the median
# of ROUNDS runs.
#
#   bench/rpc_vs_raw.sh [build-dir]
#
# PARTS (default "callgrind latency pipeline") picks what runs:
# - callgrind: instructions per round at window 64, both ends and every thread
#   in the one process, for each kind: (Ir of a run of 3N calls − Ir of a run
#   of N calls) / 2N, so start-up and tear-down cancel; N = CG_REQUESTS (20000).
#   Instruction counts are what this noisy machine cannot move. Also operator
#   new per call on each end, from zmesh-bench's own count.
# - latency: round trips, 1 client, tcp and ipc.
# - pipeline: calls/s at windows 1, 8, 64 and 256.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/bin
seconds=${SECONDS_PER_RUN:-3}
rounds=${ROUNDS:-3}
parts=${PARTS:-callgrind latency pipeline}
cg_requests=${CG_REQUESTS:-20000}
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
if part callgrind; then
  need valgrind callgrind_annotate
  # instructions <kind> <calls>: Ir of one echo run of that many calls at window 64
  instructions() {
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$1" "$bin/zmesh-bench" echo \
      --server "$1" --client "$1" --window 64 --seconds 1000 --requests "$2" > "$tmp/cg.$1.out" 2>&1
    callgrind_annotate "$tmp/cg.$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
  }
  declare -A ir
  for kind in raw rpc; do
    small=$(instructions "$kind" "$cg_requests")
    large=$(instructions "$kind" $((3 * cg_requests)))
    ir[$kind]=$(echo "($large - $small) / (2 * $cg_requests)" | bc)
    [ "$kind" = rpc ] && allocs=$(grep -h allocations_per_call "$tmp/cg.rpc.out" | tr '\n' ' ')
  done
  printf "| instructions per round, window 64 (callgrind) | %s | %s | %.2f× |\n" "${ir[raw]}" "${ir[rpc]}" \
    "$(echo "${ir[rpc]} / ${ir[raw]}" | bc -l)"
  echo "# zmesh rpc, operator new per call: $allocs" >&2
fi
if part latency; then
for transport in tcp ipc; do
  runs --transport "$transport"
  for k in p50_us p99_us; do
    a=$(median raw $k); b=$(median rpc $k)
    printf "| round trip %s, 1 client, %s | %s µs | %s µs | %.2f× |\n" "$transport" "${k%_us}" "$a" "$b" \
      "$(echo "$b / $a" | bc -l)"
  done
done
fi
if part pipeline; then
for window in 1 8 64 256; do
  runs --window "$window"
  a=$(median raw calls_per_s); b=$(median rpc calls_per_s)
  printf "| pipelined tcp, window %s | %s calls/s | %s calls/s | %.2f |\n" "$window" "$a" "$b" \
    "$(echo "$b / $a" | bc -l)"
done
fi

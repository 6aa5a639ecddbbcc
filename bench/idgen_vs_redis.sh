#!/usr/bin/env bash
# IdGen.next(count=1) vs Redis INCR, same machine, same client shape
# (one load-generator thread, 50 connections), alternating runs, with the raw
# libzmq floor (bare sockets, no RPC layer) measured in the same shape.
#
#   bench/idgen_vs_redis.sh [build-dir]      (needs: deploy/setup.sh --bench)
#
# Prints a markdown table for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bin
requests=${REQUESTS:-300000}
redis_port=${REDIS_PORT:-17379}
idgen_port=${IDGEN_PORT:-17110}
source bench/lib.sh
need redis-server redis-cli redis-benchmark bc
free_ports "$redis_port" "$idgen_port"
: > "$tmp/empty.toml"

start_redis() {  # $1: persistence (off|everysec)
  local dir="$tmp/redis-$RANDOM"
  mkdir -p "$dir"
  local args=(--port "$redis_port" --bind 127.0.0.1 --save '' --dir "$dir" --daemonize no --logfile "$dir/redis.log")
  if [ "$1" = everysec ]; then args+=(--appendonly yes --appendfsync everysec); else args+=(--appendonly no); fi
  redis-server "${args[@]}" & pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis did not start" >&2; exit 1
}
stop_last() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

start_idgen() {  # $1: persistence (off|everysec)
  local args=(--config "$tmp/empty.toml" --endpoint "tcp://127.0.0.1:$idgen_port" --broker none --log-level warn)
  if [ "$1" = everysec ]; then args+=(--data-dir "$tmp/idgen-$RANDOM" --fsync everysec); else args+=(--memory); fi
  "$bin/zmesh-idgen" "${args[@]}" 2>/dev/null & pids+=($!)
  sleep 0.3
}

redis_rps() {  # $1: pipeline
  redis-benchmark -p "$redis_port" -t incr -c 50 -n "$requests" -P "$1" -q | tr '\r' '\n' |
    awk '/INCR:/ { for (i = 1; i <= NF; i++) if ($(i+1) == "requests") { print $i; exit } }'
}
zmesh_rps() {  # $1: window per connection, $2: count
  "$bin/zmesh-bench" idgen --endpoint "tcp://127.0.0.1:$idgen_port" --connections 50 --window "$1" \
    --count "$2" --requests "$requests" --seconds 60 --namespace "b$RANDOM" |
    field calls_per_s
}

# The floor under any RPC layer on libzmq, same shape: bare DEALERs against a
# bare ROUTER echo (its own context and I/O thread), no application work.
floor_rps() {  # $1: window per connection
  "$bin/zmesh-bench" echo --server raw --client raw --connections 50 --window "$1" --seconds 3 |
    field calls_per_s
}

echo "| run | Redis INCR req/s | raw libzmq floor req/s | zmesh next req/s | zmesh ÷ Redis | floor ÷ Redis |"
echo "|---|---:|---:|---:|---:|---:|"
for persistence in off everysec; do
  for pipeline in 1 16; do
    start_redis "$persistence"; r=$(redis_rps "$pipeline"); stop_last
    f=$(floor_rps "$pipeline")
    start_idgen "$persistence"; z=$(zmesh_rps "$pipeline" 1); stop_last
    printf "| persistence %s, pipeline %s | %.0f | %.0f | %.0f | %.2f | %.2f |\n" "$persistence" "$pipeline" \
      "$r" "$f" "$z" "$(echo "$z / $r" | bc -l)" "$(echo "$f / $r" | bc -l)"
  done
done
start_idgen everysec
line=$("$bin/zmesh-bench" idgen --endpoint "tcp://127.0.0.1:$idgen_port" --connections 50 --window 1 --count 1000 \
  --requests 100000 --seconds 60 --namespace batch | tail -1)
stop_last
echo
echo "Batched next(count=1000), fsync everysec, 50 connections: ${line}"

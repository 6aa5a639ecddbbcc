#!/usr/bin/env bash
# IdGen.next(count=1) vs Redis INCR, same machine, same client shape
# (one load-generator thread, 50 connections), alternating runs, with the raw
# libzmq floor (bare sockets, no RPC layer) measured in the same shape.
#
#   bench/idgen_vs_redis.sh [build-dir]      (needs: deploy/setup.sh --bench)
#
# Prints markdown tables for bench/RESULTS.md: throughput with each server's
# CPU per request (the median of ROUNDS rounds, default 5, each round running
# Redis, the floor and zmesh in turn; the span beside it), then memory.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bin
requests=${REQUESTS:-300000}
rounds=${ROUNDS:-5}
keys=${KEYS:-50000}  # for the memory table; zmesh-idgen holds at most 100000 namespaces
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

redis_run() {  # $@: redis-benchmark options; prints req/s
  redis-benchmark -p "$redis_port" -t incr -c 50 -q "$@" | tr '\r' '\n' |
    awk '/INCR:/ { for (i = 1; i <= NF; i++) if ($(i+1) == "requests") { print $i; exit } }'
}
zmesh_run() {  # $@: zmesh-bench idgen options; its output goes to $tmp/zmesh.out
  if ! "$bin/zmesh-bench" idgen --endpoint "tcp://127.0.0.1:$idgen_port" --connections 50 \
    --seconds 60 "$@" > "$tmp/zmesh.out"; then
    echo "zmesh-bench idgen $* had failed calls (or did not run):" >&2
    cat "$tmp/zmesh.out" >&2
    exit 1
  fi
}
zmesh_field() { field "$1" < "$tmp/zmesh.out"; }

# The floor under any RPC layer on libzmq, same shape: bare DEALERs against a
# bare ROUTER echo (its own context and I/O thread), no application work.
floor_rps() {  # $1: window per connection
  "$bin/zmesh-bench" echo --server raw --client raw --connections 50 --window "$1" --seconds 3 |
    field calls_per_s
}

# The last two columns are each server's own CPU (user + system, all its
# threads) per request it served, from /proc/<pid>/stat around the run.
mkdir -p "$tmp/m"
echo "| run (median of $rounds rounds, span) | Redis INCR req/s | raw libzmq floor req/s | zmesh next req/s | zmesh ÷ floor | zmesh ÷ Redis | redis-server CPU µs/req | zmesh-idgen CPU µs/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for persistence in off everysec; do
  for pipeline in 1 16; do
    m="$persistence.$pipeline"
    for _ in $(seq "$rounds"); do
      start_redis "$persistence"
      t0=$(cpu_ticks "${pids[-1]}")
      r=$(redis_run -n "$requests" -P "$pipeline")
      rec "$m.redis_cpu" "$(us_each $(($(cpu_ticks "${pids[-1]}") - t0)) "$requests")"
      rec "$m.redis" "$r"
      stop_last
      f=$(floor_rps "$pipeline")
      rec "$m.floor" "$f"
      start_idgen "$persistence"
      t0=$(cpu_ticks "${pids[-1]}")
      zmesh_run --window "$pipeline" --count 1 --requests "$requests" --namespace "b$RANDOM"
      z_calls=$(($(zmesh_field calls) + $(zmesh_field warmup_calls)))
      rec "$m.zmesh_cpu" "$(us_each $(($(cpu_ticks "${pids[-1]}") - t0)) "$z_calls")"
      z=$(zmesh_field calls_per_s)
      rec "$m.zmesh" "$z"
      rec "$m.z_floor" "$(echo "$z / $f" | bc -l)"
      rec "$m.z_redis" "$(echo "$z / $r" | bc -l)"
      stop_last
    done
    printf "| persistence %s, pipeline %s | %.0f (%s) | %.0f (%s) | %.0f (%s) | %.2f (%s) | %.2f (%s) | %.1f (%s) | %.1f (%s) |\n" \
      "$persistence" "$pipeline" "$(med "$m.redis")" "$(span "$m.redis")" "$(med "$m.floor")" \
      "$(span "$m.floor")" "$(med "$m.zmesh")" "$(span "$m.zmesh")" "$(med "$m.z_floor")" \
      "$(span "$m.z_floor" 2)" "$(med "$m.z_redis")" "$(span "$m.z_redis" 2)" "$(med "$m.redis_cpu")" \
      "$(span "$m.redis_cpu" 1)" "$(med "$m.zmesh_cpu")" "$(span "$m.zmesh_cpu" 1)"
  done
done
start_idgen everysec
zmesh_run --window 1 --count 1000 --requests 100000 --namespace batch
stop_last
echo
echo "Batched next(count=1000), fsync everysec, 50 connections: ids_per_s=$(zmesh_field ids_per_s)"

# Memory, persistence off on both: resident memory at start, after $requests
# calls on one key, and what each further key costs — from the growth while
# calls spread over $keys keys (Redis: -r, keys counter:<12 digits>, counted
# with DBSIZE; zmesh: --namespaces, <name>:<12 digits>, round-robin).
memory_row() {  # $1: label, $2: Redis value, $3: zmesh value
  printf "| %s | %s | %s | %.2f |\n" "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)"
}
start_redis off
r_start=$(rss_kb "${pids[-1]}")
redis_run -n "$requests" > /dev/null
r_one=$(rss_kb "${pids[-1]}")
redis_run -n $((keys * 10)) -r "$keys" > /dev/null
r_keys=$(($(redis-cli -p "$redis_port" dbsize) - 1))  # less the one key above
r_per=$(((($(rss_kb "${pids[-1]}") - r_one) * 1024) / r_keys))
stop_last
start_idgen off
z_start=$(rss_kb "${pids[-1]}")
zmesh_run --window 1 --count 1 --requests "$requests" --namespace counter
z_one=$(rss_kb "${pids[-1]}")
# Names as long as redis-benchmark's keys: counter:000000012345.
zmesh_run --window 1 --count 1 --requests $((keys * 3)) --namespace counter --namespaces "$keys"
z_per=$(((($(rss_kb "${pids[-1]}") - z_one) * 1024) / keys))
stop_last
echo
echo "| memory, persistence off | redis-server | zmesh-idgen | zmesh ÷ Redis |"
echo "|---|---:|---:|---:|"
memory_row "resident at start, kB" "$r_start" "$z_start"
memory_row "resident after $requests calls on one key, kB" "$r_one" "$z_one"
memory_row "bytes a key adds (over $r_keys / $keys keys)" "$r_per" "$z_per"

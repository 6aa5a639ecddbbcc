#!/usr/bin/env bash
# zmesh-cache vs redis-server, same machine: GET and SET throughput beside the
# bare libzmq floor (alternating runs, medians, per-thread CPU), resident
# memory for 1M keys per eviction policy, the hit ratio of every policy on
# Zipf traces beside an exact LRU, and (part callgrind) instructions per GET
# and per SET in zmesh-cache.
#
#   bench/cache_vs_redis.sh [build-dir]      (needs: deploy/setup.sh --bench)
#
# Parts (PARTS, default "getset memory hitratio", about 3 minutes on a 2-core
# machine; add callgrind for the instruction counts, about 40 s more):
# - getset: ROUNDS (default 3) rounds; in each, for persistence off and then
#   everysec, and for pipeline 1 and 16: Redis GET and SET (redis-benchmark
#   -t get / -t set -c 50 -P <p> -r KEYS -d 32), zmesh GET and SET (zmesh-bench
#   cache --clients 50 --pipeline <p> --ratio 1:0 / 0:1, keys and values of the
#   same shape, RUN_SECONDS measured after a 0.5 s warm-up), and the floor
#   (zmesh-bench echo --server raw --client raw --connections 50 --window <p>:
#   bare DEALERs against a bare ROUTER echo, the frame a zmesh call sends), the
#   order of the three rotated each round. Both servers keep running through
#   the rounds, each loaded with KEYS keys first (every GET hits). Persistence
#   off: zmesh-cache --memory, redis --save '' --appendonly no; everysec:
#   zmesh-cache --data-dir <tmp> --fsync everysec, redis --appendonly yes
#   --appendfsync everysec. About 50 s a round.
# - memory: 1M keys (16-byte keys key:<12 digits>, 32-byte values, no TTL)
#   into a fresh zmesh-cache --memory --max-memory 1gb of each policy (Cache.mset
#   batches of 1000: zmesh-bench cache --load) and into a fresh redis-server
#   without persistence (redis-cli --pipe, one SET a key); VmRSS from
#   /proc/<pid>/status a second after the load, less the VmRSS of the same
#   process started empty; beside it each server's own count (zmesh:
#   cache.memory_used from Admin.stats; Redis: used_memory of INFO memory,
#   less its value empty). Under a minute.
# - hitratio: cache_hit_ratio (bench/cache_hit_ratio.cpp: the core, no
#   service), HIT_REQUESTS requests over HIT_KEYS keys. About 20 s.
# - callgrind: zmesh-cache under valgrind --tool=callgrind, KEYS keys loaded
#   first, instrumentation on for CALLGRIND_SECONDS of zmesh-bench cache, 50
#   clients, pipeline 1, gets only, then sets only (--memory), then sets only
#   with --fsync everysec; instructions per call, all threads and per thread.
#
# Prints markdown tables for bench/RESULTS.md; each run's figures go to stderr
# ("# ...").
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bin
rounds=${ROUNDS:-3}
run_seconds=${RUN_SECONDS:-2}
keys=${KEYS:-100000}                 # the getset key space, loaded before the rounds
redis_n1=${REDIS_REQUESTS_P1:-100000}    # requests of one redis-benchmark run, pipeline 1
redis_n16=${REDIS_REQUESTS_P16:-600000}  # and pipeline 16
memory_keys=${MEMORY_KEYS:-1000000}
hit_requests=${HIT_REQUESTS:-1000000}
hit_keys=${HIT_KEYS:-100000}
# Below the kernel's ephemeral range (32768–60999 here): the servers started
# later (memory, callgrind) must not find their port taken as the local end of
# some earlier connection.
cache_port=${CACHE_PORT:-27140}  # and the next two: everysec; memory and callgrind runs
redis_port=${REDIS_PORT:-27390}  # and the next two: everysec; memory runs
parts=" ${PARTS:-getset memory hitratio} "
source bench/lib.sh
need redis-server redis-cli redis-benchmark bc awk
free_ports "$cache_port" $((cache_port + 1)) $((cache_port + 2)) "$redis_port" $((redis_port + 1)) $((redis_port + 2))
mkdir -p "$tmp/m"
: > "$tmp/empty.toml"

# ---- the servers ----

declare -A pid endpoint port
wait_cache() {  # $1: name; up to about 60 s (valgrind is slow to start)
  for _ in $(seq 120); do
    kill -0 "${pid[$1]}" 2>/dev/null || break  # it gave up (its log says why)
    timeout 2 "$bin/zmesh-bench" stats --endpoint "${endpoint[$1]}" >/dev/null 2>&1 && return
    sleep 0.3
  done
  echo "zmesh-cache ($1) did not start:" >&2; cat "$tmp/$1.log" >&2; exit 1
}
start_cache() {  # $1: name, $2: port, $3: off|everysec, $4: policy, then a wrapper (valgrind …), if any
  local name=$1 p=$2 persistence=$3 policy=$4
  shift 4
  local args=(--config "$tmp/empty.toml" --endpoint "tcp://127.0.0.1:$p" --broker none
    --log-level warn --policy "$policy" --max-memory 1gb)
  if [ "$persistence" = everysec ]; then args+=(--data-dir "$tmp/$name-data" --fsync everysec); else args+=(--memory); fi
  "$@" "$bin/zmesh-cache" "${args[@]}" 2>>"$tmp/$name.log" & pids+=($!)
  pid[$name]=$!
  endpoint[$name]=tcp://127.0.0.1:$p
  wait_cache "$name"
}
start_redis() {  # $1: name, $2: port, $3: off|everysec
  local dir="$tmp/$1" args=(--port "$2" --bind 127.0.0.1 --save '' --daemonize no)
  mkdir -p "$dir"
  if [ "$3" = everysec ]; then args+=(--appendonly yes --appendfsync everysec); else args+=(--appendonly no); fi
  redis-server "${args[@]}" --dir "$dir" --logfile "$dir/redis.log" & pids+=($!)
  pid[$1]=$!
  port[$1]=$2
  for _ in $(seq 100); do redis-cli -p "$2" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis ($1) did not start" >&2; exit 1
}
stop() {  # $1: name (the last started)
  kill "${pid[$1]}"; wait "${pid[$1]}" 2>/dev/null || true
  unset 'pids[-1]'
}

# Loaders, the same keys and values into both: key:000000000000 … (16 bytes), 32 x's.
load_cache() {  # $1: name, $2: keys
  local out
  out=$("$bin/zmesh-bench" cache --endpoint "${endpoint[$1]}" --load --keys "$2" --batch 1000 \
    --clients 1 --pipeline 4) || { echo "zmesh-bench cache --load failed: $out" >&2; exit 1; }
  echo "# load $1: $out" >&2
}
load_redis() {  # $1: name, $2: keys
  awk -v n="$2" 'BEGIN {
    v = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    for (i = 0; i < n; i++) printf "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$32\r\n%s\r\n", i, v
  }' | redis-cli -p "${port[$1]}" --pipe > "$tmp/pipe.out"
  echo "# load $1: $(tr '\r\n' '  ' < "$tmp/pipe.out")" >&2
}

# ---- one run ----

# Records under $1 this run's rate and CPU per request: the server's (all
# threads, main, I/O, journal) and the load generator's.
rec_cpu() {  # $1: measure, $2: requests served, $3 $4: "ticks" before and after, $5: load generator µs/req
  local -a a b
  read -r -a a <<< "$3"; read -r -a b <<< "$4"
  rec "$1/cpu" "$(us_each $((b[0] - a[0])) "$2")"
  rec "$1/main" "$(us_each $((b[1] - a[1])) "$2")"
  rec "$1/io" "$(us_each $((b[2] - a[2])) "$2")"
  rec "$1/journal" "$(us_each $((b[3] - a[3])) "$2")"
  rec "$1/client" "$5"
}
# Runs a command, its output into $1, and prints the clock ticks of CPU it
# used: its shell's children's, once it has been waited for.
child_run() {  # $1: output file, then the command
  bash -c 'out=$1; shift; "$@" > "$out"; sed "s/.*) //" /proc/$$/stat | awk "{ print \$14 + \$15 }"' _ "$@"
}
redis_run() {  # $1: persistence, $2: pipeline, $3: get|set
  local name=redis_$1 n=$redis_n1 t0 t1 cticks
  [ "$2" = 16 ] && n=$redis_n16
  t0=$(service_ticks "${pid[$name]}")
  cticks=$(child_run "$tmp/rb.out" redis-benchmark -p "${port[$name]}" -t "$3" -c 50 -P "$2" -n "$n" \
    -r "$keys" -d 32 -q)
  t1=$(service_ticks "${pid[$name]}")
  local rps; rps=$(tr '\r' '\n' < "$tmp/rb.out" | awk -v t="${3^^}:" '$1 == t { for (i = 1; i <= NF; i++) if ($(i+1) == "requests") { print $i; exit } }')
  [ -n "$rps" ] || { echo "redis-benchmark -t $3 gave no rate:" >&2; cat "$tmp/rb.out" >&2; exit 1; }
  local m=$1/p$2/redis/$3
  rec "$m/rate" "$rps"
  rec_cpu "$m" "$n" "$t0" "$t1" "$(us_each "$cticks" "$n")"
  echo "# round $round $m: rps=$rps requests=$n server_ticks=$t0 -> $t1 client_ticks=$cticks load=$(cut -d' ' -f1 /proc/loadavg)" >&2
}
zmesh_run() {  # $1: persistence, $2: pipeline, $3: get|set
  local name=zmesh_$1 ratio=1:0 t0 t1 out
  [ "$3" = set ] && ratio=0:1
  t0=$(service_ticks "${pid[$name]}")
  if ! out=$("$bin/zmesh-bench" cache --endpoint "${endpoint[$name]}" --clients 50 --pipeline "$2" \
    --keys "$keys" --value-bytes 32 --ratio "$ratio" --seconds "$run_seconds" --warmup-seconds 0.5); then
    echo "zmesh-bench cache had failed calls (or did not run): $out" >&2
    exit 1
  fi
  t1=$(service_ticks "${pid[$name]}")
  local m=$1/p$2/zmesh/$3 served=$(($(field calls <<< "$out") + $(field warmup_calls <<< "$out")))
  rec "$m/rate" "$(field calls_per_s <<< "$out")"
  rec_cpu "$m" "$served" "$t0" "$t1" "$(field client_cpu_us_per_call <<< "$out")"
  echo "# round $round $m: $out server_ticks=$t0 -> $t1 load=$(cut -d' ' -f1 /proc/loadavg)" >&2
}
floor_run() {  # $1: persistence (the block it belongs to), $2: pipeline
  local out cticks
  # Both ends in the one process: its CPU is the floor's client and server together.
  cticks=$(child_run "$tmp/floor.out" "$bin/zmesh-bench" echo --server raw --client raw \
    --connections 50 --window "$2" --seconds "$run_seconds")
  out=$(cat "$tmp/floor.out")
  rec "$1/p$2/floor/rate" "$(field calls_per_s <<< "$out")"
  rec "$1/p$2/floor/cpu" "$(us_each "$cticks" "$(field calls <<< "$out")")"
  echo "# round $round $1/p$2/floor: $out ticks=$cticks load=$(cut -d' ' -f1 /proc/loadavg)" >&2
}
recratio() {  # $1: name, $2 $3: measures; this round's ratio of their last values
  rec "$1" "$(ratio "$(tail -1 "$tmp/m/${2//\//_}")" "$(tail -1 "$tmp/m/${3//\//_}")")"
}

echo "# $(date -u +%FT%TZ) start, load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores; $(redis-server --version | awk '{ print $3 }')" >&2
trap 'echo "# $(date -u +%FT%TZ) end, load average $(cut -d" " -f1-3 /proc/loadavg)" >&2; cleanup' EXIT

# ---- 1. GET and SET, 50 clients, pipeline 1 and 16 ----

if part getset; then
start_cache zmesh_off "$cache_port" off lru
start_cache zmesh_everysec $((cache_port + 1)) everysec lru
start_redis redis_off "$redis_port" off
start_redis redis_everysec $((redis_port + 1)) everysec
for p in off everysec; do load_cache "zmesh_$p" "$keys"; load_redis "redis_$p" "$keys"; done
targets=(redis zmesh floor)
for round in $(seq "$rounds"); do
  k=$(((round - 1) % ${#targets[@]}))
  order=("${targets[@]:k}" "${targets[@]:0:k}")
  for persistence in off everysec; do
    for pipeline in 1 16; do
      for target in "${order[@]}"; do
        case $target in
          redis) redis_run "$persistence" "$pipeline" get; redis_run "$persistence" "$pipeline" set ;;
          zmesh) zmesh_run "$persistence" "$pipeline" get; zmesh_run "$persistence" "$pipeline" set ;;
          floor) floor_run "$persistence" "$pipeline" ;;
        esac
      done
      b=$persistence/p$pipeline
      for op in get set; do
        recratio "$b/$op/redis_ratio" "$b/zmesh/$op/rate" "$b/redis/$op/rate"
        recratio "$b/$op/floor_ratio" "$b/zmesh/$op/rate" "$b/floor/rate"
        recratio "$b/$op/redis_floor" "$b/redis/$op/rate" "$b/floor/rate"
      done
    done
  done
done
# How far each server's data went (the SET runs grow the logs).
for p in off everysec; do
  echo "# zmesh_$p stats: $("$bin/zmesh-bench" stats --endpoint "${endpoint[zmesh_$p]}" | tr ' ' '\n' | grep -E '^(cache\.(keys|memory_used|hits|misses|evictions|snapshots|durable_waits)|journal\.)' | tr '\n' ' ')" >&2
  echo "# redis_$p: dbsize $(redis-cli -p "${port[redis_$p]}" dbsize) $(redis-cli -p "${port[redis_$p]}" info persistence | tr -d '\r' | grep -E '^aof_(rewrites|current_size|enabled)' | tr '\n' ' ')" >&2
done
stop redis_everysec; stop redis_off; stop zmesh_everysec; stop zmesh_off

echo "GET and SET, 50 clients, req/s: each figure the median of $rounds alternating rounds (ratios: the median of the rounds' ratios). zmesh: zmesh-bench cache, ${run_seconds} s after a 0.5 s warm-up; Redis: redis-benchmark -c 50 -r $keys -d 32, -n $redis_n1 (pipeline 1) or $redis_n16 (pipeline 16); floor: bare libzmq echo, 50 DEALERs, window = pipeline."
echo
echo "| persistence | pipeline | op | Redis | zmesh-cache | floor | zmesh ÷ Redis | zmesh ÷ floor | Redis ÷ floor |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
for persistence in off everysec; do
  for pipeline in 1 16; do
    for op in get set; do
      b=$persistence/p$pipeline
      printf "| %s | %s | %s | %.0f | %.0f | %.0f | %s | %s | %s |\n" "$persistence" "$pipeline" "${op^^}" \
        "$(med "$b/redis/$op/rate")" "$(med "$b/zmesh/$op/rate")" "$(med "$b/floor/rate")" \
        "$(med "$b/$op/redis_ratio")" "$(med "$b/$op/floor_ratio")" "$(med "$b/$op/redis_floor")"
    done
  done
done
echo
echo "Spread (min–max over the rounds):"
echo
echo "| persistence | pipeline | op | Redis | zmesh-cache | floor | zmesh ÷ Redis | zmesh ÷ floor |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
for persistence in off everysec; do
  for pipeline in 1 16; do
    for op in get set; do
      b=$persistence/p$pipeline
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n" "$persistence" "$pipeline" "${op^^}" \
        "$(span "$b/redis/$op/rate")" "$(span "$b/zmesh/$op/rate")" "$(span "$b/floor/rate")" \
        "$(span "$b/$op/redis_ratio" 2)" "$(span "$b/$op/floor_ratio" 2)"
    done
  done
done
echo
echo "CPU per request, µs (medians): each server's own, all its threads (from /proc/<pid>/task/*/stat around the run, warm-up requests included), its main thread (zmesh-cache: the loop; redis-server: the event loop), zmesh-cache's libzmq I/O thread and journal thread; and the load generator's (zmesh-bench: getrusage; redis-benchmark: its CPU as its parent shell counts it); the floor's, both ends in its one process, per echo."
echo
echo "| persistence | pipeline | op | server | all threads | main thread | zmesh I/O thread | zmesh journal thread | load generator | server + load generator |"
echo "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"
for persistence in off everysec; do
  for pipeline in 1 16; do
    for op in get set; do
      for server in redis zmesh; do
        m=$persistence/p$pipeline/$server/$op
        io="—"; journal="—"
        [ "$server" = zmesh ] && { io=$(med "$m/io"); journal=$(med "$m/journal"); }
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f |\n" "$persistence" "$pipeline" "${op^^}" \
          "$server" "$(med "$m/cpu")" "$(med "$m/main")" "$io" "$journal" "$(med "$m/client")" \
          "$(echo "$(med "$m/cpu") + $(med "$m/client")" | bc -l)"
      done
    done
    printf "| %s | %s | echo | floor (both ends, one process) | | | | | | %s |\n" "$persistence" "$pipeline" \
      "$(med "$persistence/p$pipeline/floor/cpu")"
  done
done
fi

# ---- 2. resident memory, 1M keys ----

if part memory; then
echo
echo "Resident memory for $memory_keys keys (16-byte keys, 32-byte values, no TTL), persistence off, each server fresh: VmRSS a second after the load less VmRSS started empty, per key; the server's own count beside it (zmesh: cache.memory_used; Redis: used_memory less used_memory empty)."
echo
echo "| server, policy | VmRSS empty, kB | VmRSS loaded, kB | RSS bytes / key | own count bytes / key | keys held | RSS ÷ Redis's |"
echo "|---|---:|---:|---:|---:|---:|---:|"
start_redis redis_mem $((redis_port + 2)) off
r0=$(rss_kb "${pid[redis_mem]}")
u0=$(redis-cli -p "${port[redis_mem]}" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }')
load_redis redis_mem "$memory_keys"
sleep 1
r1=$(rss_kb "${pid[redis_mem]}")
u1=$(redis-cli -p "${port[redis_mem]}" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }')
rkeys=$(redis-cli -p "${port[redis_mem]}" dbsize)
stop redis_mem
redis_per=$(echo "($r1 - $r0) * 1024 / $rkeys" | bc -l)
printf "| redis-server | %s | %s | %.1f | %.1f | %s | 1.00 |\n" "$r0" "$r1" "$redis_per" \
  "$(echo "($u1 - $u0) / $rkeys" | bc -l)" "$rkeys"
for policy in fifo lifo lru mru lfu random noeviction; do
  start_cache "mem_$policy" $((cache_port + 2)) off "$policy"
  z0=$(rss_kb "${pid[mem_$policy]}")
  load_cache "mem_$policy" "$memory_keys"
  sleep 1
  z1=$(rss_kb "${pid[mem_$policy]}")
  st=$("$bin/zmesh-bench" stats --endpoint "${endpoint[mem_$policy]}")
  zkeys=$(field cache.keys <<< "$st")
  echo "# mem $policy: rss $z0 -> $z1 kB; $(tr ' ' '\n' <<< "$st" | grep -E '^cache\.(keys|memory_used|index_bytes|evictions)=' | tr '\n' ' ')" >&2
  stop "mem_$policy"
  per=$(echo "($z1 - $z0) * 1024 / $zkeys" | bc -l)
  printf "| zmesh-cache, %s | %s | %s | %.1f | %.1f | %s | %.2f |\n" "$policy" "$z0" "$z1" "$per" \
    "$(echo "$(field cache.memory_used <<< "$st") / $zkeys" | bc -l)" "$zkeys" "$(echo "$per / $redis_per" | bc -l)"
done
fi

# ---- 3. hit ratio per policy (the core, no service) ----

if part hitratio; then
echo
"$bin/cache_hit_ratio" --requests "$hit_requests" --keys "$hit_keys"
fi

# ---- 4. instructions per GET and per SET (callgrind) ----

if part callgrind; then
need valgrind callgrind_control callgrind_annotate
cg_seconds=${CALLGRIND_SECONDS:-10}
echo
echo "Instructions in zmesh-cache per call (callgrind, counted over a ${cg_seconds}-second run of zmesh-bench cache, 50 clients, pipeline 1, no warm-up, $keys keys loaded before counting; --separate-threads): all threads, its loop thread, its libzmq I/O thread, its journal thread; of the loop (inclusive): a request's handling (rpc Server handle: header, params check, dispatch, reply), the params check (checkFields), the method (CacheService::get / set: the core and, for a set, the log record), the core alone (CacheStore::get / set, the log record included: it is built in the store's listener), the log record (LogRecorder::onSet: built and handed to the journal), the reply (rpc Server reply)."
echo
echo "| op | persistence | calls | all threads | loop thread | I/O thread | journal thread | rpc handle | params check | CacheService method | CacheStore (core) | log record | rpc reply |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for run in "get off" "set off" "set everysec"; do
  read -r op persistence <<< "$run"
  start_cache cg $((cache_port + 2)) "$persistence" lru valgrind --tool=callgrind --instr-atstart=no \
    --separate-threads=yes --callgrind-out-file="$tmp/cg.%p" -q
  load_cache cg "$keys"
  callgrind_control -i on "${pid[cg]}" > /dev/null
  callgrind_control -z "${pid[cg]}" > /dev/null
  ratio=1:0; [ "$op" = set ] && ratio=0:1
  out=$("$bin/zmesh-bench" cache --endpoint "${endpoint[cg]}" --clients 50 --pipeline 1 --keys "$keys" \
    --value-bytes 32 --ratio "$ratio" --seconds "$cg_seconds" --warmup-seconds 0)
  callgrind_control -d "${pid[cg]}" > /dev/null
  stop cg
  calls=$(field calls <<< "$out")
  echo "# callgrind $op $persistence: $out" >&2
  total=0 io=0 loop=0 journal=0 handle=0 fields=0 method=0 core=0 record=0 reply=0
  for f in "$tmp"/cg.*.1-[0-9][0-9]; do  # dump 1, one file per thread
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    total=$((total + ${ir:-0}))
    if [ -n "$(incl "$f" "zmesh::rpc::Server::Impl::run(")" ]; then
      loop=$ir
      handle=$(incl "$f" "zmesh::rpc::Server::Impl::handle(")
      fields=$(incl "$f" "zmesh::rpc::checkFields(")
      method=$(incl "$f" "zmesh::cache::CacheService::$op(")
      record=$(incl "$f" "zmesh::cache::LogRecorder::onSet(")
      core=$(incl "$f" "zmesh::cache::CacheStore::$op(")
      reply=$(incl "$f" "zmesh::rpc::Server::Impl::reply(")
    elif [ -n "$(incl "$f" "zmesh::storage::Journal")" ]; then
      journal=$((journal + ${ir:-0}))
    elif [ "${ir:-0}" -gt "$io" ]; then
      io=$ir
    fi
  done
  each() { printf "%.0f" "$(echo "${1:-0} / $calls" | bc -l)"; }
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "${op^^}" "$persistence" \
    "$calls" "$(each "$total")" "$(each "$loop")" "$(each "$io")" "$(each "$journal")" \
    "$(each "$handle")" "$(each "$fields")" "$(each "$method")" "$(each "$core")" "$(each "$record")" \
    "$(each "$reply")"
  rm -rf "$tmp"/cg.* "$tmp"/cg-data
done
fi

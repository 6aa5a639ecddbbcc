#!/usr/bin/env bash
# RateLimit.check vs Redis running the usual rate-limit scripts (EVALSHA), same
# machine, same client shape (one load-generator thread, 50 connections),
# alternating runs, with the raw libzmq floor (bare DEALERs against a bare
# ROUTER echo) measured in the same rounds.
#
#   bench/ratelimit_vs_redis.sh [build-dir]      (needs: deploy/setup.sh --bench)
#
# Prints markdown tables for bench/RESULTS.md: a hot key against Redis and the
# floor, 1M distinct keys for each algorithm, memory per tracked key, and
# where each thread's CPU goes; the per-round figures go to stderr ("# ...").
# PARTS picks the parts (default: hot threads keys memory); CALLGRIND=1 adds
# instructions per check in zmesh-ratelimit (valgrind).
#
# Rules (one per algorithm, all keyed on one descriptor) are chosen so that
# every check is allowed and every key stays tracked for the whole run: a
# window of 24h, and for the buckets and GCRA a burst of 10^12 refilled at
# 1 a day. So both servers do their full work on every check (Redis: ZADD and
# PEXPIRE, zmesh: take and keep). The hot key of the sliding log has a rule of
# its own, 100000 (zmesh's largest log limit) per 100 ms: allowed up to 1M
# checks/s, its log holding the last 100 ms of them (under a 24h window it
# would fill and deny every later check).
set -euo pipefail
export LC_ALL=C  # decimal points for printf and bc, byte order for sort and join
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bin
run_seconds=${RUN_SECONDS:-3}
rounds=${ROUNDS:-3}
keys=${KEYS:-1000000}         # distinct keys for the throughput and memory tables
redis_port=${REDIS_PORT:-17379}
rl_port=${RATELIMIT_PORT:-17120}
parts=" ${PARTS:-hot threads keys memory} "
source bench/lib.sh
need redis-server redis-cli redis-benchmark bc
free_ports "$redis_port" "$rl_port"
[ $((keys % 16)) -eq 0 ] || { echo "KEYS must be a multiple of 16" >&2; exit 2; }
endpoint="tcp://127.0.0.1:$rl_port"
mkdir -p "$tmp/m"
algorithms=(token_bucket leaky_bucket fixed_window sliding_window_log sliding_window_counter gcra)

# ---- the two servers ----

day_ms=86400000
cat > "$tmp/mesh.toml" <<EOF
[ratelimit]
endpoint = "$endpoint"
max_keys = 20000000
EOF
for a in token_bucket leaky_bucket gcra; do
  printf '[ratelimit.rules.%s]\nalgorithm = "%s"\nlimit = 1\nwindow = "24h"\nburst = 1000000000000\ndescriptors = ["key"]\n' \
    "$a" "$a" >> "$tmp/mesh.toml"
done
for a in fixed_window sliding_window_counter; do
  printf '[ratelimit.rules.%s]\nalgorithm = "%s"\nlimit = 1000000000000\nwindow = "24h"\ndescriptors = ["key"]\n' \
    "$a" "$a" >> "$tmp/mesh.toml"
done
printf '[ratelimit.rules.sliding_window_log]\nalgorithm = "sliding_window_log"\nlimit = 100000\nwindow = "24h"\ndescriptors = ["key"]\n' >> "$tmp/mesh.toml"
printf '[ratelimit.rules.sliding_window_log_hot]\nalgorithm = "sliding_window_log"\nlimit = 100000\nwindow = "100ms"\ndescriptors = ["key"]\n' >> "$tmp/mesh.toml"

start_ratelimit() {  # $@: wrapper (valgrind …), if any
  "$@" "$bin/zmesh-ratelimit" --config "$tmp/mesh.toml" --endpoint "$endpoint" --broker none \
    --memory --log-level warn 2>>"$tmp/ratelimit.log" & pids+=($!)
  for _ in $(seq 600); do
    "$bin/zmesh-bench" stats --endpoint "$endpoint" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "zmesh-ratelimit did not start:" >&2; cat "$tmp/ratelimit.log" >&2; exit 1
}
start_redis() {
  local dir="$tmp/redis-$RANDOM"
  mkdir -p "$dir"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize no --logfile "$dir/redis.log" & pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  # The scripts as rate limiters on Redis are usually written: the log in a
  # sorted set (score: the time in µs; member: that time and a random number,
  # unique), the fixed window as INCR and PEXPIRE on the first. Both expire
  # an idle key, as zmesh drops one back at its full quota.
  local log='local function limit(key, window, limit)
  local t = redis.call("TIME")
  local now = t[1] * 1000000 + t[2]
  redis.call("ZREMRANGEBYSCORE", key, "-inf", now - window)
  local used = redis.call("ZCARD", key)
  if used < limit then
    redis.call("ZADD", key, now, t[1] .. string.format("%06d", t[2]) .. "-" .. math.random(1000000))
    redis.call("PEXPIRE", key, math.ceil(window / 1000))
    return {1, limit - used - 1}
  end
  return {0, 0}
end'
  local fixed='local function limit(key, window, limit)
  local n = redis.call("INCR", key)
  if n == 1 then redis.call("PEXPIRE", key, window) end
  if n > limit then return {0, 0, redis.call("PTTL", key)} end
  return {1, limit - n}
end'
  # check: KEYS[1], ARGV window (log: µs, fixed: ms) and limit. fill: keys
  # <prefix><12 digits> ARGV[3] to ARGV[4], each checked ARGV[5] times.
  local check='return limit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))'
  local fill='for i = tonumber(ARGV[3]), tonumber(ARGV[4]) do
  local key = KEYS[1] .. string.format("%012d", i)
  for _ = 1, tonumber(ARGV[5]) do limit(key, tonumber(ARGV[1]), tonumber(ARGV[2])) end
end
return 0'
  sha_log=$(redis-cli -p "$redis_port" script load "$log
$check")
  sha_fixed=$(redis-cli -p "$redis_port" script load "$fixed
$check")
  sha_log_fill=$(redis-cli -p "$redis_port" script load "$log
$fill")
  sha_fixed_fill=$(redis-cli -p "$redis_port" script load "$fixed
$fill")
}
stop_last() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# Redis's side of each zmesh rule: the script, its window and limit arguments.
redis_args() {  # $1: zmesh rule; prints "sha window limit"
  case "$1" in
    sliding_window_log) echo "$sha_log $((day_ms * 1000)) 100000" ;;
    sliding_window_log_hot) echo "$sha_log 100000 100000" ;;
    fixed_window) echo "$sha_fixed $day_ms 1000000000000" ;;
  esac
}
redis_fill() {  # $1: zmesh rule, $2: key prefix, $3: keys, $4: checks per key
  local a; read -r -a a <<< "$(redis_args "$1")"
  local sha=$sha_fixed_fill
  [ "${a[0]}" = "$sha_log" ] && sha=$sha_log_fill
  for ((first = 0; first < $3; first += 100000)); do
    redis-cli -p "$redis_port" evalsha "$sha" 1 "$2" "${a[1]}" "${a[2]}" "$first" \
      $((first + 100000 > $3 ? $3 - 1 : first + 99999)) "$4" > /dev/null
  done
}

# ---- one measured run each ----

declare -A rate_guess  # requests/s a redis-benchmark run last reached, by shape
redis_run() {  # $1: zmesh rule, $2: pipeline, $3: key prefix, $4: keys; sets r_rps r_cpu
  local a; read -r -a a <<< "$(redis_args "$1")"
  local shape="$1/$2/$4" key="${3}000000000000" range=()
  if [ "$4" -gt 1 ]; then key="${3}__rand_int__"; range=(-r "$4"); fi
  # redis-benchmark has no duration: size the run from the last one's rate.
  local n; n=$(printf "%.0f" "$(echo "${rate_guess[$shape]:-20000} * $run_seconds" | bc -l)")
  local t0; t0=$(cpu_ticks "$redis_pid")
  r_rps=$(redis-benchmark -p "$redis_port" -c 50 -n "$n" -P "$2" "${range[@]}" -q \
      evalsha "${a[0]}" 1 "$key" "${a[1]}" "${a[2]}" | tr '\r' '\n' |
    awk -F': ' '/requests per second/ { split($NF, w, " "); print w[1]; exit }')
  [ -n "$r_rps" ] || { echo "redis-benchmark failed ($shape)" >&2; exit 1; }
  r_cpu=$(us_each $(($(cpu_ticks "$redis_pid") - t0)) "$n")
  rate_guess[$shape]=$r_rps
}
zmesh_run() {  # $@: zmesh-bench ratelimit options; sets z_dps z_cpu z_allowed
  local t0; t0=$(cpu_ticks "$rl_pid")
  if ! "$bin/zmesh-bench" ratelimit --endpoint "$endpoint" --connections 50 \
    --seconds "$run_seconds" "$@" > "$tmp/zmesh.out"; then
    echo "zmesh-bench ratelimit $* had failed calls (or did not run):" >&2
    cat "$tmp/zmesh.out" >&2
    exit 1
  fi
  local batch; batch=$(field batch < "$tmp/zmesh.out")
  [ "$batch" -gt 0 ] || batch=1
  local decisions=$((($(field calls < "$tmp/zmesh.out") + $(field warmup_calls < "$tmp/zmesh.out")) * batch))
  z_cpu=$(us_each $(($(cpu_ticks "$rl_pid") - t0)) "$decisions")
  z_dps=$(field decisions_per_s < "$tmp/zmesh.out")
  z_allowed=$(field allowed_sampled < "$tmp/zmesh.out")
}
floor_run() {  # $1: window per connection; sets f_cps
  f_cps=$("$bin/zmesh-bench" echo --server raw --client raw --connections 50 --window "$1" \
    --seconds "$run_seconds" | field calls_per_s)
}

# Each measure's values over the rounds go to a file; tables show the median.
has() { [ -f "$tmp/m/${1//\//_}" ]; }

# Whatever else runs on the machine moves every figure: say how busy it was.
echo "# $(date -u +%FT%TZ) start, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
trap 'echo "# $(date -u +%FT%TZ) end, load average $(cut -d" " -f1-3 /proc/loadavg)" >&2; cleanup' EXIT
start_redis
redis_pid=${pids[-1]}
start_ratelimit
rl_pid=${pids[-1]}

# ---- 1. a hot key: zmesh, Redis and the floor, alternating ----

# Redis's first runs size the later ones (and warm it as zmesh-bench's warm-up does).
if part hot || part threads; then
for rule in sliding_window_log_hot fixed_window; do
  prefix=hlg:; [ "$rule" = fixed_window ] && prefix=hfx:
  for p in 1 16; do
    rate_guess[$rule/$p/1]=$([ "$p" = 1 ] && echo 20000 || echo 100000)
    run_seconds=1 redis_run "$rule" "$p" "$prefix" 1
  done
done
part hot || rounds_hot=0
for round in $(seq "${rounds_hot:-$rounds}"); do
  for rule in sliding_window_log_hot fixed_window; do
    prefix=hlg:; [ "$rule" = fixed_window ] && prefix=hfx:
    for p in 1 16; do
      redis_run "$rule" "$p" "$prefix" 1
      rec "hot/$rule/$p/redis" "$r_rps"; rec "hot/$rule/$p/redis_cpu" "$r_cpu"
      floor_run "$p"
      rec "hot/$rule/$p/floor" "$f_cps"
      zmesh_run --rule "$rule" --window "$p"
      rec "hot/$rule/$p/zmesh" "$z_dps"; rec "hot/$rule/$p/zmesh_cpu" "$z_cpu"
      rec "hot/$rule/$p/allowed" "$z_allowed"
      rec "hot/$rule/$p/zmesh_floor" "$(ratio "$z_dps" "$f_cps")"
      rec "hot/$rule/$p/zmesh_redis" "$(ratio "$z_dps" "$r_rps")"
      rec "hot/$rule/$p/floor_redis" "$(ratio "$f_cps" "$r_rps")"
      echo "# round $round hot $rule pipeline $p: redis $r_rps ($r_cpu µs) floor $f_cps zmesh $z_dps ($z_cpu µs, allowed $z_allowed), load $(cut -d" " -f1 /proc/loadavg)" >&2
      if [ "$p" = 16 ]; then
        zmesh_run --rule "$rule" --window 1 --batch 16
        rec "hot/$rule/b16/zmesh" "$z_dps"; rec "hot/$rule/b16/zmesh_cpu" "$z_cpu"
        rec "hot/$rule/b16/allowed" "$z_allowed"
        rec "hot/$rule/b16/zmesh_redis" "$(ratio "$z_dps" "$r_rps")"
        echo "# round $round hot $rule checkBatch 16: zmesh $z_dps ($z_cpu µs, allowed $z_allowed)" >&2
      fi
    done
  done
done
fi

if part hot; then
echo "One hot key, 50 connections; each figure the median of $rounds alternating rounds of ${run_seconds} s (ratios: the median of the rounds' ratios). Decisions/s; CPU is each server's own, all threads, per decision."
echo
echo "| rule, shape | Redis EVALSHA | raw libzmq floor (calls/s) | zmesh | zmesh ÷ floor | zmesh ÷ Redis | floor ÷ Redis | Redis CPU µs | zmesh CPU µs | zmesh allowed |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for rule in sliding_window_log_hot fixed_window; do
  for p in 1 16; do
    m=hot/$rule/$p
    printf "| %s, pipeline %s | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s | %.3f |\n" "$rule" "$p" \
      "$(med $m/redis)" "$(med $m/floor)" "$(med $m/zmesh)" "$(med $m/zmesh_floor)" \
      "$(med $m/zmesh_redis)" "$(med $m/floor_redis)" "$(med $m/redis_cpu)" "$(med $m/zmesh_cpu)" \
      "$(med $m/allowed)"
  done
  m=hot/$rule/b16
  printf "| %s, checkBatch 16 (window 1) vs Redis pipeline 16 | %.0f | — | %.0f | — | %s | — | %s | %s | %.3f |\n" "$rule" \
    "$(med hot/$rule/16/redis)" "$(med $m/zmesh)" "$(med $m/zmesh_redis)" \
    "$(med hot/$rule/16/redis_cpu)" "$(med $m/zmesh_cpu)" "$(med $m/allowed)"
done
echo
echo "Spread (min–max over the rounds), decisions/s:"
echo
echo "| rule, shape | Redis | floor | zmesh |"
echo "|---|---:|---:|---:|"
for rule in sliding_window_log_hot fixed_window; do
  for p in 1 16; do
    printf "| %s, pipeline %s | %s | %s | %s |\n" "$rule" "$p" "$(span hot/$rule/$p/redis)" \
      "$(span hot/$rule/$p/floor)" "$(span hot/$rule/$p/zmesh)"
  done
  printf "| %s, checkBatch 16 | | | %s |\n" "$rule" "$(span hot/$rule/b16/zmesh)"
done
fi

# ---- 2. where the CPU goes: every thread, mid-run ----

# Samples every thread of the servers and load generators over 1.5 s of a run
# (started 1 s in, past the warm-up); prints "| shape | thread | % of a core |".
threads_during() {  # $1: shape label, then label=pid pairs are read from $tmp/watch
  sleep 1
  local before after
  # The whole machine's busy ticks too (every process, every core): the
  # other work on it takes what the measured threads leave.
  machine() { awk '$1 == "cpu" { print "machine;0;all_processes", $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
  before=$(while read -r l p; do thread_ticks "$l" "$p"; done < "$tmp/watch"; machine)
  sleep 1.5
  after=$(while read -r l p; do thread_ticks "$l" "$p"; done < "$tmp/watch"; machine)
  join <(sort <<< "$before") <(sort <<< "$after") |
    awk -v shape="$1" -v hz="$(getconf CLK_TCK)" '{
      split($1, p, ";"); pct = ($3 - $2) * 100 / hz / 1.5
      if (p[1] == "machine") printf "| %s | the machine, every process | %.0f |\n", shape, pct
      else if (pct >= 1) printf "| %s | %s %s (%s) | %.0f |\n", shape, p[1], p[3], p[2], pct }'
}
if part threads; then
echo
echo "Per thread during one more run of each shape (sliding_window_log_hot, one hot key), % of one core over 1.5 s mid-run (machine: every process, of $(nproc) × 100 %):"
echo
echo "| shape | process, thread | % of a core |"
echo "|---|---|---:|"
for p in 1 16; do
  "$bin/zmesh-bench" ratelimit --endpoint "$endpoint" --connections 50 --seconds 4 \
    --rule sliding_window_log_hot --window "$p" > /dev/null & client=$!
  printf "zmesh-ratelimit %s\nzmesh-bench %s\n" "$rl_pid" "$client" > "$tmp/watch"
  threads_during "zmesh, pipeline $p"
  wait "$client"
  "$bin/zmesh-bench" echo --server raw --client raw --connections 50 --window "$p" --seconds 4 > /dev/null & client=$!
  printf "floor %s\n" "$client" > "$tmp/watch"
  threads_during "floor, pipeline $p"
  wait "$client"
  a=$(redis_args sliding_window_log_hot)
  read -r -a a <<< "$a"
  redis-benchmark -p "$redis_port" -c 50 -n "$(printf "%.0f" "$(echo "${rate_guess[sliding_window_log_hot/$p/1]} * 4" | bc -l)")" \
    -P "$p" -q evalsha "${a[0]}" 1 hlg:000000000000 "${a[1]}" "${a[2]}" > /dev/null & client=$!
  printf "redis-server %s\nredis-benchmark %s\n" "$redis_pid" "$client" > "$tmp/watch"
  threads_during "Redis, pipeline $p"
  wait "$client"
done
fi

# ---- 3. 1M distinct keys, each algorithm ----

# Every key tracked first, filled in key order; the measured runs then visit
# them in a scattered order (zmesh: a stride through the keys; Redis: -r,
# random), so neither walks its memory in the order it was allocated.
if part keys; then
for a in "${algorithms[@]}"; do
  "$bin/zmesh-bench" ratelimit --endpoint "$endpoint" --connections 50 --window 4 --batch 16 \
    --warmup 0 --seconds 600 --rule "$a" --keys "$keys" --order sequential \
    --requests $((keys / 16)) > /dev/null
done
redis_fill sliding_window_log log: "$keys" 1
redis_fill fixed_window fix: "$keys" 1
for rule in sliding_window_log fixed_window; do
  prefix=log:; [ "$rule" = fixed_window ] && prefix=fix:
  rate_guess[$rule/1/$keys]=20000; rate_guess[$rule/16/$keys]=100000
  for p in 1 16; do run_seconds=1 redis_run "$rule" "$p" "$prefix" "$keys"; done
done
echo "# tracked after the fills: $("$bin/zmesh-bench" stats --endpoint "$endpoint" | field ratelimit.keys) zmesh keys, $(redis-cli -p "$redis_port" dbsize) Redis keys" >&2
for round in $(seq "$rounds"); do
  for a in "${algorithms[@]}"; do
    for shape in 1 16 b16; do
      case $shape in
        b16) zmesh_run --rule "$a" --keys "$keys" --window 1 --batch 16 ;;
        *) zmesh_run --rule "$a" --keys "$keys" --window "$shape" ;;
      esac
      rec "keys/$a/$shape/zmesh" "$z_dps"; rec "keys/$a/$shape/zmesh_cpu" "$z_cpu"
      rec "keys/$a/$shape/allowed" "$z_allowed"
      echo "# round $round $keys keys $a $shape: zmesh $z_dps ($z_cpu µs, allowed $z_allowed)" >&2
    done
    if [ "$a" = sliding_window_log ] || [ "$a" = fixed_window ]; then
      prefix=log:; [ "$a" = fixed_window ] && prefix=fix:
      for p in 1 16; do
        redis_run "$a" "$p" "$prefix" "$keys"
        rec "keys/$a/$p/redis" "$r_rps"; rec "keys/$a/$p/redis_cpu" "$r_cpu"
        echo "# round $round $keys keys $a pipeline $p: redis $r_rps ($r_cpu µs)" >&2
      done
    fi
  done
done
echo
echo "$keys distinct keys, all tracked before the runs, visited in a scattered order; 50 connections; medians of $rounds rounds of ${run_seconds} s. Decisions/s (CPU µs per decision, the server's own):"
echo
echo "| algorithm | server | pipeline 1 | pipeline 16 | checkBatch 16 |"
echo "|---|---|---:|---:|---:|"
for a in "${algorithms[@]}"; do
  printf "| %s | zmesh | %.0f (%s) | %.0f (%s) | %.0f (%s) |\n" "$a" \
    "$(med keys/$a/1/zmesh)" "$(med keys/$a/1/zmesh_cpu)" "$(med keys/$a/16/zmesh)" \
    "$(med keys/$a/16/zmesh_cpu)" "$(med keys/$a/b16/zmesh)" "$(med keys/$a/b16/zmesh_cpu)"
  if has "keys/$a/1/redis"; then
    printf "| %s | Redis EVALSHA | %.0f (%s) | %.0f (%s) | — |\n" "$a" \
      "$(med keys/$a/1/redis)" "$(med keys/$a/1/redis_cpu)" "$(med keys/$a/16/redis)" \
      "$(med keys/$a/16/redis_cpu)"
    printf "| %s | zmesh ÷ Redis | %s | %s | %s (÷ pipeline 16) |\n" "$a" \
      "$(ratio "$(med keys/$a/1/zmesh)" "$(med keys/$a/1/redis)")" \
      "$(ratio "$(med keys/$a/16/zmesh)" "$(med keys/$a/16/redis)")" \
      "$(ratio "$(med keys/$a/b16/zmesh)" "$(med keys/$a/16/redis)")"
  fi
done
echo
echo "Spread (min–max), zmesh decisions/s at pipeline 1 / 16 / checkBatch 16: $(for a in "${algorithms[@]}"; do printf "%s %s / %s / %s; " "$a" "$(span keys/$a/1/zmesh)" "$(span keys/$a/16/zmesh)" "$(span keys/$a/b16/zmesh)"; done)"
fi
stop_last  # zmesh-ratelimit
stop_last  # redis-server

# ---- 4. memory per tracked key ----

# A fresh server per algorithm: resident memory after 50 connections' calls on
# one key (in the shape of the fill below), then after $keys more keys (the sliding logs with 5 checks each,
# at five different times), over the keys it then says it tracks. Redis:
# the same through its scripts (the fill script calls the check's function),
# used_memory (its allocator's count) and resident memory.
part memory && {
memory_row() {  # $1: algorithm, $2 $3: Redis used_memory and resident B/key, $4 $5: zmesh's, $6: keys, $7: log heap B/key
  local r="—"
  [ "$2" != "—" ] && r="$(ratio "$4" "$2") / $(ratio "$5" "$3")"
  printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n" "$1" "$2" "$3" "$4" "$5" "$r" "$6" "$7"
}
declare -A redis_used redis_rss
for a in sliding_window_log fixed_window; do
  passes=1; [ "$a" = sliding_window_log ] && passes=5
  start_redis
  redis_pid=${pids[-1]}
  rate_guess[$a/1/1]=20000
  run_seconds=1 redis_run "$a" 1 one: 1
  u0=$(redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
  k0=$(redis-cli -p "$redis_port" dbsize)
  s0=$(rss_kb "$redis_pid")
  redis_fill "$a" key: "$keys" "$passes"
  sleep 1
  u1=$(redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
  k1=$(redis-cli -p "$redis_port" dbsize)
  s1=$(rss_kb "$redis_pid")
  redis_used[$a]=$(((u1 - u0) / (k1 - k0)))
  redis_rss[$a]=$((((s1 - s0) * 1024) / (k1 - k0)))
  echo "# Redis $a: $((k1 - k0)) keys, used_memory $u0 -> $u1, RSS $s0 -> $s1 kB" >&2
  stop_last
done
# zmesh's resident memory twice: with jemalloc returning freed pages at once
# (MALLOC_CONF decay 0: what the keys hold, as Redis's used_memory counts),
# and as shipped (freed pages kept up to 10 s, as Redis's resident memory).
zmesh_memory() {  # $1: algorithm, $2: MALLOC_CONF; sets z_per z_keys z_log
  local passes=1
  [ "$1" = sliding_window_log ] && passes=5
  start_ratelimit env MALLOC_CONF="$2"
  rl_pid=${pids[-1]}
  # The fill's shape on one key first: its transient buffers are in the baseline.
  zmesh_run --rule "$1" --key-prefix one: --window 4 --batch 16 --requests 20000
  "$bin/zmesh-bench" stats --endpoint "$endpoint" > "$tmp/stats"
  local k0 log0 s0 k1 s1
  k0=$(field ratelimit.keys < "$tmp/stats")
  log0=$(field ratelimit.sliding_log_bytes < "$tmp/stats")
  s0=$(rss_kb "$rl_pid")
  "$bin/zmesh-bench" ratelimit --endpoint "$endpoint" --connections 50 --window 4 --batch 16 \
    --warmup 0 --seconds 600 --rule "$1" --keys "$keys" --order sequential \
    --requests $((keys * passes / 16)) > /dev/null
  sleep 1
  "$bin/zmesh-bench" stats --endpoint "$endpoint" > "$tmp/stats"
  k1=$(field ratelimit.keys < "$tmp/stats")
  s1=$(rss_kb "$rl_pid")
  z_keys=$((k1 - k0))
  z_per=$(((s1 - s0) * 1024 / z_keys))
  z_log=$((($(field ratelimit.sliding_log_bytes < "$tmp/stats") - log0) / z_keys))
  echo "# zmesh $1 (MALLOC_CONF=$2): $z_keys keys, RSS $s0 -> $s1 kB, sliding_log_bytes $(field ratelimit.sliding_log_bytes < "$tmp/stats")" >&2
  stop_last
}
echo
echo "Memory per tracked key, $keys keys of 16 characters (key:000000123456); sliding logs hold 5 entries a key:"
echo
echo "| algorithm | Redis used_memory B/key | Redis resident B/key | zmesh resident B/key, freed pages returned at once | zmesh resident B/key, as shipped | zmesh ÷ Redis (first ÷ used_memory / second ÷ resident) | zmesh keys tracked | of which log heap B/key |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for a in "${algorithms[@]}"; do
  zmesh_memory "$a" dirty_decay_ms:0,muzzy_decay_ms:0
  live=$z_per
  zmesh_memory "$a" ""
  memory_row "$a" "${redis_used[$a]:-—}" "${redis_rss[$a]:-—}" "$live" "$z_per" "$z_keys" "$z_log"
done
}

# ---- 5. instructions per check (CALLGRIND=1) ----

[ "${CALLGRIND:-0}" = 1 ] || exit 0
need valgrind callgrind_control callgrind_annotate
calls=${CALLGRIND_CALLS:-20000}
echo
echo "Instructions in zmesh-ratelimit per decision (callgrind, counted over $calls calls from 50 connections, window 1). The sweep runs on a timer (10000 key visits per 100 ms), so its share per call grows with valgrind's slowness: shown apart, and left out of the loop thread's figure."
echo
echo "| shape | all threads, less the sweep | libzmq I/O thread | loop thread, less the sweep | params check (checkFields) | RateLimitService method | Limiter::check | decide() | reply (Server reply()) | sweep |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for shape in "fixed_window 1 0" "sliding_window_log_hot 1 0" "gcra 1 0" "token_bucket 1000000 0" "fixed_window 1 16"; do
  read -r rule nkeys batch <<< "$shape"
  start_ratelimit valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$tmp/cg.%p" -q
  callgrind_control -i on "${pids[-1]}" > /dev/null
  callgrind_control -z "${pids[-1]}" > /dev/null
  "$bin/zmesh-bench" ratelimit --endpoint "$endpoint" --connections 50 --window 1 \
    --batch "$batch" --warmup 0 --seconds 600 --rule "$rule" --keys "$nkeys" --requests "$calls" > /dev/null
  callgrind_control -d "${pids[-1]}" > /dev/null
  stop_last
  per=$(((batch > 0 ? batch : 1) * calls))
  total=0 io=0 loop=0 fields=0 method=0 limiter=0 decide=0 reply=0 sweep=0
  method_name="service.cpp:zmesh::ratelimit::RateLimitService::check("
  [ "$batch" -gt 0 ] && method_name="service.cpp:zmesh::ratelimit::RateLimitService::checkBatch("
  for f in "$tmp"/cg.*.1-[0-9][0-9]; do  # dump 1, one file per thread
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    total=$((total + ${ir:-0}))
    if [ -n "$(incl "$f" "server.cpp:zmesh::rpc::Server::Impl::run(")" ]; then
      loop=$ir
      fields=$(incl "$f" "frame.cpp:zmesh::rpc::checkFields(")
      method=$(incl "$f" "$method_name")
      limiter=$(incl "$f" "limiter.cpp:zmesh::ratelimit::Limiter::check(")
      decide=$(incl "$f" "algorithm.cpp:zmesh::ratelimit::decide(")
      reply=$(incl "$f" "server.cpp:zmesh::rpc::Server::Impl::reply(")
      sweep=$(incl "$f" "limiter.cpp:zmesh::ratelimit::Limiter::sweep(")
    elif [ "${ir:-0}" -gt "$io" ]; then
      io=$ir
    fi
  done
  label="$rule, one hot key"
  [ "$nkeys" = 1 ] || label="$rule, $calls new keys"
  [ "$batch" = 0 ] || label+=", checkBatch $batch"
  each() { printf "%.0f" "$(echo "${1:-0} / $per" | bc -l)"; }
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$label" \
    "$(each $((total - ${sweep:-0})))" "$(each "$io")" "$(each $((loop - ${sweep:-0})))" \
    "$(each "$fields")" "$(each "$method")" "$(each "$limiter")" "$(each "$decide")" \
    "$(each "$reply")" "$(each "$sweep")"
  rm -f "$tmp"/cg.*
done

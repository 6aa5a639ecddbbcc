#!/usr/bin/env bash
# REST: POST /v1/ids/{ns}?count=1 through zmesh-gateway → zmesh-idgen, vs
# GET /INCR/key through webdis → Redis. Same machine, same wrk shape
# (2 threads, 50 connections), alternating runs; both backends persist with
# an fsync every second (Redis appendfsync everysec; idgen fsync everysec).
#
#   bench/gateway_vs_webdis.sh [build-dir]      (needs: deploy/setup.sh --bench)
#   DURATION=5s ROUNDS=5 bench/gateway_vs_webdis.sh build
#
# A third server, zmesh-http-floor (bench/http_floor.cpp), is zmesh-gateway's
# architecture with everything but Beast, one DEALER and a ROUTER echo taken
# out: the most a gateway built this way can do here.
#
# Prints a markdown table for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bin
duration=${DURATION:-10s}
rounds=${ROUNDS:-5}
redis_port=${REDIS_PORT:-17379}
webdis_port=${WEBDIS_PORT:-17380}
idgen_port=${IDGEN_PORT:-17110}
http_port=${HTTP_PORT:-18080}
floor_port=${FLOOR_PORT:-18180}
floor_echo_port=${FLOOR_ECHO_PORT:-17120}
gateway_threads=${GATEWAY_THREADS:-1}  # deploy/local/mesh.toml's setting
source bench/lib.sh
need redis-server redis-cli webdis wrk curl bc
free_ports "$redis_port" "$webdis_port" "$idgen_port" "$http_port" "$((http_port + 1))" \
  "$floor_port" "$floor_echo_port"

wait_http() {  # $1: url
  # -m: the floor's first answer waits on its echo; an echo that never came up must not hang us.
  for _ in $(seq 200); do curl -s -m 1 -o /dev/null "$1" && return; sleep 0.05; done
  echo "$1 did not answer" >&2; exit 1
}

# Redis + webdis (webdis's own packaged default: 2 threads).
mkdir -p "$tmp/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --dir "$tmp/redis" --daemonize no \
  --appendonly yes --appendfsync everysec --logfile "$tmp/redis/redis.log" & pids+=($!)
redis_pid=$!
cat > "$tmp/webdis.json" <<JSON
{"redis_host": "127.0.0.1", "redis_port": $redis_port, "http_host": "127.0.0.1",
 "http_port": $webdis_port, "threads": 2, "daemonize": false, "database": 0,
 "verbosity": 0, "logfile": "$tmp/webdis.log"}
JSON
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
webdis "$tmp/webdis.json" 2>/dev/null & pids+=($!)
webdis_pid=$!
wait_http "http://127.0.0.1:$webdis_port/PING"

# idgen + gateway.
cat > "$tmp/mesh.toml" <<TOML
[idgen]
endpoint = "tcp://127.0.0.1:$idgen_port"
data_dir = "$tmp/idgen"
fsync = "everysec"
[gateway]
listen = "127.0.0.1:$http_port"
endpoint = "tcp://127.0.0.1:$((http_port + 1))"
threads = $gateway_threads
TOML
"$bin/zmesh-idgen" --config "$tmp/mesh.toml" --log-level warn 2>"$tmp/idgen.log" & pids+=($!)
idgen_pid=$!
"$bin/zmesh-gateway" --config "$tmp/mesh.toml" --log-level warn 2>"$tmp/gateway.log" & pids+=($!)
gateway_pid=$!
wait_http "http://127.0.0.1:$http_port/healthz"

"$bin/zmesh-http-floor" echo --bind "tcp://127.0.0.1:$floor_echo_port" & pids+=($!)
echo_pid=$!
"$bin/zmesh-http-floor" gateway --listen "$floor_port" --connect "tcp://127.0.0.1:$floor_echo_port" &
pids+=($!)
floor_pid=$!
wait_http "http://127.0.0.1:$floor_port/"

cat > "$tmp/post.lua" <<'LUA'
wrk.method = "POST"
LUA

# wrk's summary: "N requests in", "Requests/sec: N" and, with --latency,
# "99% X"; the CPU the servers behind the URL spent per request; and each
# server's context switches per request (one word per pid, in order).
run_wrk() {  # $1: the servers' pids ("p1 p2"), then wrk target args
  local servers=$1
  shift
  local t0 rps p99 requests p
  local -a cs0 cs1
  t0=$(cpu_ticks $servers)
  for p in $servers; do cs0+=("$(ctx_switches "$p")"); done
  wrk -t2 -c50 -d"$duration" --latency "$@" > "$tmp/wrk.out"
  for p in $servers; do cs1+=("$(ctx_switches "$p")"); done
  rps=$(awk '/Requests\/sec:/ { print $2 }' "$tmp/wrk.out")
  p99=$(awk '$1 == "99%" { print $2 }' "$tmp/wrk.out")
  requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$tmp/wrk.out")
  if grep -q "Non-2xx" "$tmp/wrk.out"; then echo "non-2xx answers:" >&2; cat "$tmp/wrk.out" >&2; exit 1; fi
  local out="$rps $p99 $(us_each $(($(cpu_ticks $servers) - t0)) "$requests")" i
  for i in "${!cs0[@]}"; do
    out+=" $(printf "%.2f" "$(echo "(${cs1[i]} - ${cs0[i]}) / $requests" | bc -l)")"
  done
  echo "$out"
}
to_ms() {  # wrk prints 850.00us / 1.20ms / 1.01s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# The /healthz and floor columns split the gateway's cost: GET /healthz is the
# same HTTP work with no call to a service behind it; the floor is the call
# with no gateway work around it. "CPU µs/req" is what both processes behind
# the URL (webdis + Redis, gateway + idgen, floor + echo) spent per request,
# user + system, all threads, from /proc/<pid>/stat around the run. "cs/req":
# a process's context switches per request, which counts its threads' wake-ups
# (each sleep and wake is one voluntary switch) and is steadier under a noisy
# machine than CPU time. "req/s ratio" is gateway / webdis; medians are over
# the rounds, each column on its own.
webdis_side="$webdis_pid $redis_pid"
zmesh_side="$gateway_pid $idgen_pid"
floor_side="$floor_pid $echo_pid"
mkdir -p "$tmp/m"
# Rows go to files and print after the rounds: one table of throughput and
# CPU, one of wake-ups, each closed by the medians over the rounds.
echo "| round | webdis INCR req/s | p99 ms | CPU µs/req | gateway ids req/s | p99 ms | CPU µs/req | req/s ratio | gateway /healthz req/s | floor req/s | CPU µs/req | floor / webdis | gateway / floor |" > "$tmp/t1"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" >> "$tmp/t1"
echo "| round | webdis cs/req | Redis cs/req | gateway cs/req | idgen cs/req | floor cs/req | echo cs/req |" > "$tmp/t2"
echo "|---|---:|---:|---:|---:|---:|---:|" >> "$tmp/t2"
for round in $(seq "$rounds"); do
  read -r w_rps w_p99 w_cpu w_cs r_cs < <(run_wrk "$webdis_side" "http://127.0.0.1:$webdis_port/INCR/bench")
  read -r g_rps g_p99 g_cpu g_cs i_cs < <(run_wrk "$zmesh_side" -s "$tmp/post.lua" \
    "http://127.0.0.1:$http_port/v1/ids/bench?count=1")
  read -r h_rps _ < <(run_wrk "$zmesh_side" "http://127.0.0.1:$http_port/healthz")
  read -r f_rps _ f_cpu f_cs e_cs < <(run_wrk "$floor_side" -s "$tmp/post.lua" \
    "http://127.0.0.1:$floor_port/v1/ids/bench?count=1")
  row=("$w_rps" "$(to_ms "$w_p99")" "$w_cpu" "$g_rps" "$(to_ms "$g_p99")" "$g_cpu"
    "$(ratio "$g_rps" "$w_rps")" "$h_rps" "$f_rps" "$f_cpu" "$(ratio "$f_rps" "$w_rps")"
    "$(ratio "$g_rps" "$f_rps")")
  names=(w_rps w_p99 w_cpu g_rps g_p99 g_cpu g_w h_rps f_rps f_cpu f_w g_f)
  for i in "${!row[@]}"; do rec "${names[i]}" "${row[i]}"; done
  printf "| %s | %.0f | %s | %s | %.0f | %s | %s | %s | %.0f | %.0f | %s | %s | %s |\n" "$round" \
    "${row[@]}" >> "$tmp/t1"
  cs=("$w_cs" "$r_cs" "$g_cs" "$i_cs" "$f_cs" "$e_cs")
  names=(w_cs r_cs g_cs i_cs f_cs e_cs)
  for i in "${!cs[@]}"; do rec "${names[i]}" "${cs[i]}"; done
  printf "| %s | %s | %s | %s | %s | %s | %s |\n" "$round" "${cs[@]}" >> "$tmp/t2"
  echo "round $round done" >&2
done
printf "| median | %.0f | %.2f | %.1f | %.0f | %.2f | %.1f | %.2f | %.0f | %.0f | %.1f | %.2f | %.2f |\n" \
  "$(med w_rps)" "$(med w_p99)" "$(med w_cpu)" "$(med g_rps)" "$(med g_p99)" "$(med g_cpu)" \
  "$(med g_w)" "$(med h_rps)" "$(med f_rps)" "$(med f_cpu)" "$(med f_w)" "$(med g_f)" >> "$tmp/t1"
printf "| median | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n" "$(med w_cs)" "$(med r_cs)" "$(med g_cs)" \
  "$(med i_cs)" "$(med f_cs)" "$(med e_cs)" >> "$tmp/t2"
cat "$tmp/t1"
echo
echo "Context switches per request (voluntary + involuntary, all threads, from"
echo "/proc/<pid>/task/*/status around the same runs):"
echo
cat "$tmp/t2"
echo
echo "| resident memory after the rounds | webdis + Redis | gateway + idgen | ratio |"
echo "|---|---:|---:|---:|"
w_rss=$(rss_kb $webdis_side)
g_rss=$(rss_kb $zmesh_side)
printf "| kB | %s | %s | %.2f |\n" "$w_rss" "$g_rss" "$(echo "$g_rss / $w_rss" | bc -l)"

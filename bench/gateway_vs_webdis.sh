#!/usr/bin/env bash
# REST: POST /v1/ids/{ns}?count=1 through zmesh-gateway → zmesh-idgen, vs
# GET /INCR/key through webdis → Redis. Same machine, same wrk shape
# (2 threads, 50 connections), alternating runs; both backends persist with
# an fsync every second (Redis appendfsync everysec; idgen fsync everysec).
#
#   bench/gateway_vs_webdis.sh [build-dir]      (needs: deploy/setup.sh --bench)
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
rounds=${ROUNDS:-3}
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
# "99% X"; and the CPU the servers behind the URL spent per request.
run_wrk() {  # $1: the servers' pids ("p1 p2"), then wrk target args
  local servers=$1
  shift
  local t0 rps p99 requests
  t0=$(cpu_ticks $servers)
  wrk -t2 -c50 -d"$duration" --latency "$@" > "$tmp/wrk.out"
  rps=$(awk '/Requests\/sec:/ { print $2 }' "$tmp/wrk.out")
  p99=$(awk '$1 == "99%" { print $2 }' "$tmp/wrk.out")
  requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$tmp/wrk.out")
  if grep -q "Non-2xx" "$tmp/wrk.out"; then echo "non-2xx answers:" >&2; cat "$tmp/wrk.out" >&2; exit 1; fi
  echo "$rps $p99 $(us_each $(($(cpu_ticks $servers) - t0)) "$requests")"
}
to_ms() {  # wrk prints 850.00us / 1.20ms / 1.01s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# The /healthz and floor columns split the gateway's cost: GET /healthz is the
# same HTTP work with no call to a service behind it; the floor is the call
# with no gateway work around it. "CPU µs/req" is what both processes behind
# the URL (webdis + Redis, gateway + idgen, floor + echo) spent per request,
# user + system, all threads, from /proc/<pid>/stat around the run.
webdis_side="$webdis_pid $redis_pid"
zmesh_side="$gateway_pid $idgen_pid"
floor_side="$floor_pid $echo_pid"
echo "| round | webdis INCR req/s | p99 ms | CPU µs/req | gateway ids req/s | p99 ms | CPU µs/req | req/s ratio | gateway /healthz req/s | floor req/s | CPU µs/req | floor / webdis |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq "$rounds"); do
  read -r w_rps w_p99 w_cpu < <(run_wrk "$webdis_side" "http://127.0.0.1:$webdis_port/INCR/bench")
  read -r g_rps g_p99 g_cpu < <(run_wrk "$zmesh_side" -s "$tmp/post.lua" \
    "http://127.0.0.1:$http_port/v1/ids/bench?count=1")
  read -r h_rps _ < <(run_wrk "$zmesh_side" "http://127.0.0.1:$http_port/healthz")
  read -r f_rps _ f_cpu < <(run_wrk "$floor_side" -s "$tmp/post.lua" \
    "http://127.0.0.1:$floor_port/v1/ids/bench?count=1")
  printf "| %s | %.0f | %s | %s | %.0f | %s | %s | %.2f | %.0f | %.0f | %s | %.2f |\n" "$round" \
    "$w_rps" "$(to_ms "$w_p99")" "$w_cpu" "$g_rps" "$(to_ms "$g_p99")" "$g_cpu" \
    "$(echo "$g_rps / $w_rps" | bc -l)" "$h_rps" "$f_rps" "$f_cpu" "$(echo "$f_rps / $w_rps" | bc -l)"
done
echo
echo "| resident memory after the rounds | webdis + Redis | gateway + idgen | ratio |"
echo "|---|---:|---:|---:|"
w_rss=$(rss_kb $webdis_side)
g_rss=$(rss_kb $zmesh_side)
printf "| kB | %s | %s | %.2f |\n" "$w_rss" "$g_rss" "$(echo "$g_rss / $w_rss" | bc -l)"

#!/usr/bin/env bash
# Lock.acquire + Lock.release pairs (zmesh-lock) vs etcd's v3 lock API and the
# Redis single-instance lock, same machine, same client shape (one
# load-generator thread, one connection and one call in flight a client, each
# client acquiring again as soon as its release is answered), alternating runs,
# with the bare libzmq floor measured in the same rounds.
#
#   bench/lock_vs_etcd.sh [build-dir]      (needs: deploy/setup.sh --bench)
#
# ROUNDS (default 5) rounds of RUN_SECONDS (default 3) measured seconds a run,
# after a 0.5 s warm-up: about 65 s a round on a 2-core machine, about 6
# minutes in all. PARTS picks the parts (default: pairs threads); CALLGRIND=1
# adds instructions per pair in zmesh-lock (valgrind, about 1 minute more). Prints markdown tables for bench/RESULTS.md; each run's
# figures go to stderr ("# ...").
#
# What each part measures:
# - Shapes: 1 client on a lock of its own; 50 clients, each a lock of its own
#   (uncontended: pairs/s); 16 clients on one lock (contended: hand-offs/s,
#   every release hands the lock to a waiting client).
# - zmesh: `zmesh-bench lock --server zmesh`, Lock.acquire(name, owner,
#   ttlMs 30000, waitMs 0 or, contended, 20000) then Lock.release(name, owner,
#   token), against zmesh-lock --broker none, one with --fsync always (every
#   grant and release record fsynced before its answer, group commit) and one
#   with --fsync no (the log written, never fsynced); token blocks are fsynced
#   under both, as shipped (token_block 10000).
# - etcd (apt, 3.4, single node, defaults: its WAL fsynced on every commit; 3.4
#   has no switch to turn that off): `zmesh-bench lock --server etcd`, C++ HTTP
#   client on etcd's JSON gRPC gateway: POST /v3/lock/lock {name, lease} and
#   POST /v3/lock/unlock {key}. Each client grants one lease (TTL: the run + 60
#   s) before the run and revokes it after: the session etcd's concurrency.Mutex
#   and `etcdctl lock` hold, so a pair is two calls, as zmesh's is. A lease per
#   acquire (zmesh's ttlMs is per grant) would add a third call; not measured.
#   The gateway (JSON to gRPC, inside etcd) is part of what etcd's figures cost.
# - Redis (apt, 7.0): `zmesh-bench lock --server redis`, SET key value NX PX
#   30000 (value unique per grant), then EVALSHA of the documented
#   compare-and-delete script; no fencing token and no queue: contended,
#   a client finding the lock held asks again at once (its `busy` replies are
#   counted). Once without persistence (--save '' --appendonly no), once
#   --appendonly yes --appendfsync always (durable before each reply).
# - Floor: `zmesh-bench echo --server raw --client raw --connections N
#   --window 1` (bare DEALERs against a bare ROUTER echo, the frame a zmesh
#   call sends): calls/s; a pair is two calls, so floor pairs/s = calls/s ÷ 2.
# - CPU: each server's own (user + system, all threads, from /proc/<pid>/stat
#   around the run) per pair it served (warm-up pairs included), and for
#   zmesh-lock per thread: its loop thread, its libzmq I/O thread, its journal
#   thread. The load generator's own CPU per pair is printed by zmesh-bench
#   (getrusage, all its threads).
# - Hand-offs (contended): measured in the load generator, which sees every
#   client: release k is answered, grant k + 1 arrives (one holder at a time,
#   so they alternate). "reply → grant": from the releasing client's reply to
#   the next holder's grant (negative when the grant came first, as zmesh
#   answers the waiter before the releaser); "send → grant": from sending the
#   release to the next grant (whole: both trips and the server's work).
# - fsync: each round, the disk's fdatasync latency (200 appends of 150 bytes
#   in the scratch directory, where every server's data lives): what bounds
#   every durable figure.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bin
run_seconds=${RUN_SECONDS:-3}
rounds=${ROUNDS:-5}
lock_port=${LOCK_PORT:-47130}    # and the next: fsync always, fsync no
etcd_port=${ETCD_PORT:-47379}    # and the next: its peer port
redis_port=${REDIS_PORT:-47381}  # and the next: without persistence, appendfsync always
parts=" ${PARTS:-pairs threads} "
source bench/lib.sh
need redis-server redis-cli etcd curl python3 bc
free_ports "$lock_port" $((lock_port + 1)) "$etcd_port" $((etcd_port + 1)) "$redis_port" $((redis_port + 1))
mkdir -p "$tmp/m"
: > "$tmp/empty.toml"

# ---- the servers, each kept running through the rounds ----

declare -A pid endpoint
start_lock() {  # $1: name, $2: port, $3: fsync policy, then a wrapper (valgrind …), if any
  local name=$1 port=$2 policy=$3
  shift 3
  "$@" "$bin/zmesh-lock" --config "$tmp/empty.toml" --endpoint "tcp://127.0.0.1:$port" \
    --broker none --log-level warn --data-dir "$tmp/$name" --fsync "$policy" \
    2>>"$tmp/$name.log" & pids+=($!)
  pid[$name]=$!
  endpoint[$name]=tcp://127.0.0.1:$port
  for _ in $(seq 600); do
    "$bin/zmesh-bench" stats --endpoint "${endpoint[$name]}" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "zmesh-lock ($name) did not start:" >&2; cat "$tmp/$name.log" >&2; exit 1
}
start_etcd() {
  etcd --name bench --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "bench=http://127.0.0.1:$((etcd_port + 1))" \
    --logger zap --log-level warn 2>>"$tmp/etcd.log" & pids+=($!)
  pid[etcd]=$!
  endpoint[etcd]=127.0.0.1:$etcd_port
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q true && return
    sleep 0.1
  done
  echo "etcd did not start:" >&2; cat "$tmp/etcd.log" >&2; exit 1
}
start_redis() {  # $1: name, $2: port, $3: no|always
  local dir="$tmp/$1" args=(--port "$2" --bind 127.0.0.1 --save '' --daemonize no)
  mkdir -p "$dir"
  if [ "$3" = always ]; then args+=(--appendonly yes --appendfsync always); else args+=(--appendonly no); fi
  redis-server "${args[@]}" --dir "$dir" --logfile "$dir/redis.log" & pids+=($!)
  pid[$1]=$!
  endpoint[$1]=127.0.0.1:$2
  for _ in $(seq 100); do redis-cli -p "$2" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis ($1) did not start" >&2; exit 1
}

# ---- one run ----

stat_field() { "$bin/zmesh-bench" stats --endpoint "$1" | field "$2"; }
etcd_fsyncs() {  # etcd's WAL fsyncs so far (its /metrics)
  curl -sf "http://${endpoint[etcd]}/metrics" | awk '$1 == "etcd_disk_wal_fsync_duration_seconds_count" { print $2 }'
}
shape_args() {  # $1: shape
  case "$1" in
    u1) echo "--clients 1" ;;
    u50) echo "--clients 50" ;;
    c16) echo "--clients 16 --contended" ;;
  esac
}
# Sets out (the zmesh-bench line) and records this round's figures under $1/$2.
lock_run() {  # $1: shape, $2: target (zmesh_always zmesh_no etcd redis_always redis_no)
  local shape=$1 target=$2 server=${2%%_*} p=${pid[$2]} s0=0 s1=0
  local -a a t0 t1
  read -r -a a <<< "$(shape_args "$shape")"
  read -r -a t0 <<< "$(service_ticks "$p")"
  [ "$server" = zmesh ] && s0=$(stat_field "${endpoint[$target]}" journal.syncs)
  [ "$server" = etcd ] && s0=$(etcd_fsyncs)
  if ! out=$("$bin/zmesh-bench" lock --server "$server" --endpoint "${endpoint[$target]}" \
    --seconds "$run_seconds" --tag "${target/_/-}$RANDOM" "${a[@]}"); then
    echo "zmesh-bench lock --server $server ${a[*]} had failed calls (or did not run): $out" >&2
    exit 1
  fi
  read -r -a t1 <<< "$(service_ticks "$p")"
  [ "$server" = zmesh ] && s1=$(stat_field "${endpoint[$target]}" journal.syncs)
  [ "$server" = etcd ] && s1=$(etcd_fsyncs)
  local pairs; pairs=$(field total_pairs <<< "$out")
  local m=$shape/$target
  if [ "$shape" = c16 ]; then rec "$m/rate" "$(field grants_per_s <<< "$out")"
  else rec "$m/rate" "$(field pairs_per_s <<< "$out")"; fi
  rec "$m/cpu" "$(us_each $((t1[0] - t0[0])) "$pairs")"
  rec "$m/loop" "$(us_each $((t1[1] - t0[1])) "$pairs")"
  rec "$m/io" "$(us_each $((t1[2] - t0[2])) "$pairs")"
  rec "$m/journal" "$(us_each $((t1[3] - t0[3])) "$pairs")"
  rec "$m/client" "$(field client_cpu_us_per_pair <<< "$out")"
  rec "$m/syncs" "$(printf "%.3f" "$(echo "($s1 - $s0) / $pairs" | bc -l)")"
  rec "$m/p50" "$(field pair_p50_us <<< "$out")"
  rec "$m/p99" "$(field pair_p99_us <<< "$out")"
  rec "$m/busy" "$(printf "%.1f" "$(echo "$(field busy <<< "$out") / $pairs" | bc -l)")"
  if [ "$shape" = c16 ]; then
    for k in handoff_p50_us handoff_p99_us handoff_from_send_p50_us handoff_from_send_p99_us; do
      rec "$m/$k" "$(field "$k" <<< "$out")"
    done
  fi
  echo "# round $round $shape $target: $out server_cpu_ticks=$((t1[0] - t0[0])) loop=$((t1[1] - t0[1])) io=$((t1[2] - t0[2])) journal=$((t1[3] - t0[3])) fsyncs=$((s1 - s0)) load=$(cut -d' ' -f1 /proc/loadavg)" >&2
}
floor_run() {  # $1: shape (u1|u50)
  local n=1
  [ "$1" = u50 ] && n=50
  local cps; cps=$("$bin/zmesh-bench" echo --server raw --client raw --connections "$n" --window 1 \
    --seconds "$run_seconds" | field calls_per_s)
  rec "$1/floor/rate" "$(printf "%.0f" "$(echo "$cps / 2" | bc -l)")"
  echo "# round $round $1 floor: calls_per_s=$cps load=$(cut -d' ' -f1 /proc/loadavg)" >&2
}
fsync_probe() {  # records the disk's fdatasync latency, µs, p50 and p99
  local r
  r=$(python3 - "$tmp/fsync-probe" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
t = []
for _ in range(200):
    os.write(fd, b"x" * 150)
    s = time.perf_counter(); os.fdatasync(fd); t.append((time.perf_counter() - s) * 1e6)
os.close(fd); os.unlink(sys.argv[1]); t.sort()
print("%.0f %.0f" % (t[100], t[198]))
EOF
)
  rec fsync/p50 "${r% *}"; rec fsync/p99 "${r#* }"
  echo "# round $round fdatasync p50/p99 µs: $r" >&2
}

recratio() {  # $1: name, $2 $3: measures; this round's ratio of their last values
  rec "$1" "$(ratio "$(tail -1 "$tmp/m/${2//\//_}")" "$(tail -1 "$tmp/m/${3//\//_}")")"
}

echo "# $(date -u +%FT%TZ) start, load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores; etcd $(etcd --version | awk '/etcd Version/ { print $3 }'), $(redis-server --version | awk '{ print $3 }')" >&2
trap 'echo "# $(date -u +%FT%TZ) end, load average $(cut -d" " -f1-3 /proc/loadavg)" >&2; cleanup' EXIT
start_lock zmesh_always "$lock_port" always
start_lock zmesh_no $((lock_port + 1)) "no"
start_etcd
start_redis redis_no "$redis_port" "no"
start_redis redis_always $((redis_port + 1)) always
targets=(zmesh_always etcd redis_always zmesh_no redis_no floor)
shapes=(u1 u50 c16)
label() {
  case "$1" in
    u1) echo "1 client, a lock of its own" ;;
    u50) echo "50 clients, a lock each" ;;
    c16) echo "16 clients, one lock (hand-offs/s)" ;;
  esac
}

# ---- 1. pairs/s and hand-offs/s, alternating, the order rotated each round ----

if part pairs; then
for round in $(seq "$rounds"); do
  fsync_probe
  k=$(((round - 1) % ${#targets[@]}))
  order=("${targets[@]:k}" "${targets[@]:0:k}")
  for shape in "${shapes[@]}"; do
    for target in "${order[@]}"; do
      if [ "$target" = floor ]; then
        [ "$shape" = c16 ] || floor_run "$shape"
      else
        lock_run "$shape" "$target"
      fi
    done
    recratio "$shape/always_etcd" "$shape/zmesh_always/rate" "$shape/etcd/rate"
    recratio "$shape/always_redis" "$shape/zmesh_always/rate" "$shape/redis_always/rate"
    recratio "$shape/no_redis" "$shape/zmesh_no/rate" "$shape/redis_no/rate"
    [ "$shape" = c16 ] || recratio "$shape/no_floor" "$shape/zmesh_no/rate" "$shape/floor/rate"
  done
done

echo "Pairs/s (acquire + release; contended: hand-offs/s), each figure the median of $rounds alternating rounds of ${run_seconds} s (ratios: the median of the rounds' ratios). Durable: zmesh --fsync always, etcd, Redis appendfsync always; persistence off: zmesh --fsync no, Redis without AOF. Floor: bare libzmq calls/s ÷ 2."
echo
echo "| shape | zmesh fsync always | etcd | zmesh ÷ etcd | Redis AOF always | zmesh ÷ Redis AOF | zmesh fsync no | Redis, no persistence | zmesh ÷ Redis | floor pairs/s | zmesh fsync no ÷ floor |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for shape in "${shapes[@]}"; do
  f="—"; fr="—"
  if [ "$shape" != c16 ]; then f=$(printf "%.0f" "$(med "$shape/floor/rate")"); fr=$(med "$shape/no_floor"); fi
  printf "| %s | %.0f | %.0f | %s | %.0f | %s | %.0f | %.0f | %s | %s | %s |\n" "$(label "$shape")" \
    "$(med "$shape/zmesh_always/rate")" "$(med "$shape/etcd/rate")" "$(med "$shape/always_etcd")" \
    "$(med "$shape/redis_always/rate")" "$(med "$shape/always_redis")" \
    "$(med "$shape/zmesh_no/rate")" "$(med "$shape/redis_no/rate")" "$(med "$shape/no_redis")" "$f" "$fr"
done
echo
echo "Spread (min–max over the rounds):"
echo
echo "| shape | zmesh fsync always | etcd | Redis AOF always | zmesh fsync no | Redis | floor | zmesh ÷ etcd | zmesh no ÷ floor |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for shape in "${shapes[@]}"; do
  f="—"; fr="—"
  if [ "$shape" != c16 ]; then f=$(span "$shape/floor/rate"); fr=$(span "$shape/no_floor" 2); fi
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$(label "$shape")" \
    "$(span "$shape/zmesh_always/rate")" "$(span "$shape/etcd/rate")" "$(span "$shape/redis_always/rate")" \
    "$(span "$shape/zmesh_no/rate")" "$(span "$shape/redis_no/rate")" "$f" \
    "$(span "$shape/always_etcd" 2)" "$fr"
done
echo
echo "CPU per pair (µs, medians): each server's own (all threads; zmesh-lock also per thread), and the load generator's (zmesh-bench, all its threads). fsyncs per pair: zmesh-lock's journal.syncs, etcd's WAL fsyncs (etcd_disk_wal_fsync_duration_seconds_count), over the pairs. Pair latency: acquire sent to release answered, in the load generator."
echo
echo "| shape | server | server CPU | zmesh loop thread | zmesh I/O thread | zmesh journal thread | load generator CPU | fsyncs / pair | pair p50 µs | pair p99 µs |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for shape in "${shapes[@]}"; do
  for target in zmesh_always etcd redis_always zmesh_no redis_no; do
    m=$shape/$target
    z=("—" "—" "—" "—")
    if [ "${target%%_*}" = zmesh ]; then
      z=("$(med "$m/loop")" "$(med "$m/io")" "$(med "$m/journal")" "$(med "$m/syncs")")
    elif [ "$target" = etcd ]; then
      z[3]=$(med "$m/syncs")
    fi
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f |\n" "$(label "$shape")" "$target" \
      "$(med "$m/cpu")" "${z[0]}" "${z[1]}" "${z[2]}" "$(med "$m/client")" "${z[3]}" \
      "$(med "$m/p50")" "$(med "$m/p99")"
  done
done
echo
echo "Hand-offs on one lock, 16 clients (µs, medians of the rounds' p50 and p99; Redis: the clients ask again at once, busy replies per hand-off):"
echo
echo "| server | hand-offs/s | reply → grant p50 | reply → grant p99 | send → grant p50 | send → grant p99 | busy replies / hand-off |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for target in zmesh_always etcd redis_always zmesh_no redis_no; do
  m=c16/$target
  printf "| %s | %.0f | %s | %s | %s | %s | %s |\n" "$target" "$(med "$m/rate")" \
    "$(med "$m/handoff_p50_us")" "$(med "$m/handoff_p99_us")" \
    "$(med "$m/handoff_from_send_p50_us")" "$(med "$m/handoff_from_send_p99_us")" "$(med "$m/busy")"
done
echo
echo "The disk under every durable figure: fdatasync of a 150-byte append, median over the rounds of each round's p50 $(med fsync/p50) µs and p99 $(med fsync/p99) µs (rounds' p50 $(span fsync/p50), p99 $(span fsync/p99))."
fi

# ---- 2. where the CPU goes: every thread, mid-run, 50 clients ----

threads_during() {  # $1: shape label; label-pid pairs are read from $tmp/watch
  sleep 1.5
  local before after
  # The whole machine: busy and all ticks (idle too) of every core.
  machine() { awk '$1 == "cpu" { print "machine;0;busy", $2 + $3 + $4 + $7 + $8 + $9; print "machine;1;all", $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
  before=$(while read -r l p; do thread_ticks "$l" "$p"; done < "$tmp/watch"; machine)
  sleep 1.5
  after=$(while read -r l p; do thread_ticks "$l" "$p"; done < "$tmp/watch"; machine)
  join <(sort <<< "$before") <(sort <<< "$after") |
    awk -v shape="$1" -v hz="$(getconf CLK_TCK)" -v cores="$(nproc)" '{
      split($1, p, ";"); pct = ($3 - $2) * 100 / hz / 1.5
      if (p[1] == "machine") { if (p[2] == 0) busy = $3 - $2; else all = $3 - $2 }
      else if (p[1] == "etcd") { etcd += pct; n++ }
      else if (pct >= 2) printf "| %s | %s %s | %.0f |\n", shape, p[1], p[3], pct }
      END {
        if (n) printf "| %s | etcd, all its %d threads | %.0f |\n", shape, n, etcd
        printf "| %s | the machine, every process | %.0f |\n", shape, busy * 100 * cores / all }'
}
if part threads; then
echo
echo "Per thread during one more 50-client run of each (threads at 2 % or more), % of one core over 1.5 s mid-run (machine: every process, of $(nproc) × 100 %):"
echo
echo "| run | process, thread | % of a core |"
echo "|---|---|---:|"
for target in zmesh_always zmesh_no etcd redis_no floor; do
  if [ "$target" = floor ]; then
    "$bin/zmesh-bench" echo --server raw --client raw --connections 50 --window 1 --seconds 4 > /dev/null & client=$!
    printf "floor %s\n" "$client" > "$tmp/watch"
  else
    "$bin/zmesh-bench" lock --server "${target%%_*}" --endpoint "${endpoint[$target]}" --clients 50 \
      --seconds 4 --tag "t$RANDOM" > /dev/null & client=$!
    printf "%s %s\nzmesh-bench %s\n" "$target" "${pid[$target]}" "$client" > "$tmp/watch"
  fi
  threads_during "$target, 50 clients"
  wait "$client"
done
fi

# ---- 3. instructions per pair (CALLGRIND=1) ----

[ "${CALLGRIND:-0}" = 1 ] || exit 0
need valgrind callgrind_control callgrind_annotate
cg_seconds=${CALLGRIND_SECONDS:-10}
echo
echo "Instructions in zmesh-lock per acquire + release pair (callgrind, counted over a ${cg_seconds}-second run, no warm-up, of the shape named; --fsync no, so that valgrind's slowness does not change the batches):"
echo
echo "| shape | all threads | libzmq I/O thread | loop thread | journal thread | params check (checkFields) | LockService::acquire | LockService::release | LockTable::acquire | LockTable::release | replies (Server reply()) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for shape in u1 u50 c16; do
  start_lock cg $((lock_port + 2)) "no" valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$tmp/cg.%p" -q
  callgrind_control -i on "${pid[cg]}" > /dev/null
  callgrind_control -z "${pid[cg]}" > /dev/null
  read -r -a a <<< "$(shape_args "$shape")"
  out=$("$bin/zmesh-bench" lock --server zmesh --endpoint "${endpoint[cg]}" --seconds "$cg_seconds" \
    --warmup-seconds 0 --tag "cg$RANDOM" "${a[@]}")
  callgrind_control -d "${pid[cg]}" > /dev/null
  kill "${pid[cg]}"; wait "${pid[cg]}" 2>/dev/null || true
  unset 'pids[-1]'  # it was the last started
  pairs=$(field total_pairs <<< "$out")
  echo "# callgrind $shape: $out" >&2
  total=0 io=0 loop=0 journal=0 fields=0 sacq=0 srel=0 tacq=0 trel=0 reply=0
  for f in "$tmp"/cg.*.1-[0-9][0-9]; do  # dump 1, one file per thread
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    total=$((total + ${ir:-0}))
    if [ -n "$(incl "$f" "server.cpp:zmesh::rpc::Server::Impl::run(")" ]; then
      loop=$ir
      fields=$(incl "$f" "frame.cpp:zmesh::rpc::checkFields(")
      sacq=$(incl "$f" "service.cpp:zmesh::lock::LockService::acquire(")
      srel=$(incl "$f" "service.cpp:zmesh::lock::LockService::release(")
      tacq=$(incl "$f" "lock_table.cpp:zmesh::lock::LockTable::acquire(")
      trel=$(incl "$f" "lock_table.cpp:zmesh::lock::LockTable::release(")
      reply=$(incl "$f" "server.cpp:zmesh::rpc::Server::Impl::reply(")
    elif [ -n "$(incl "$f" "journal.cpp:")" ]; then
      journal=$((journal + ${ir:-0}))
    elif [ "${ir:-0}" -gt "$io" ]; then
      io=$ir
    fi
  done
  each() { printf "%.0f" "$(echo "${1:-0} / $pairs" | bc -l)"; }
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$(label "$shape")" \
    "$(each "$total")" "$(each "$io")" "$(each "$loop")" "$(each "$journal")" "$(each "$fields")" \
    "$(each "$sacq")" "$(each "$srel")" "$(each "$tacq")" "$(each "$trel")" "$(each "$reply")"
  rm -rf "$tmp"/cg.* "$tmp/cg"
done

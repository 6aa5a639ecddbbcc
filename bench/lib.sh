# Shared by the bench/*.sh scripts (sourced): a scratch directory and the
# processes started into it, both gone on exit however the script ends.
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

need() {  # $@: commands the benchmark runs
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool missing: run deploy/setup.sh --bench" >&2; exit 2; }
  done
}

free_ports() {  # $@: loopback ports the benchmark listens on
  # A leftover server on one of them would be measured instead of ours.
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port is in use: stop what listens there, or choose another port (see the script's *_PORT variables)" >&2
      exit 2
    fi
  done
}

field() {  # $1: key; prints the value of each "key=value" word on stdin (zmesh-bench output)
  tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'
}

cpu_ticks() {  # $@: pids; clock ticks of CPU (user + system, every thread) they have used, summed
  local p
  # The command name in field 2 may hold spaces: count fields from after it.
  for p in "$@"; do sed 's/.*) //' "/proc/$p/stat"; done | awk '{ sum += $12 + $13 } END { print sum }'
}

rss_kb() {  # $@: pids; their resident memory now, summed, in kB
  local p
  for p in "$@"; do echo "/proc/$p/status"; done | xargs awk '$1 == "VmRSS:" { sum += $2 } END { print sum }'
}

us_each() {  # $1: clock ticks, $2: how many things they were spent on; prints µs each
  printf "%.1f" "$(echo "$1 * 1000000 / $(getconf CLK_TCK) / $2" | bc -l)"
}

part() { [[ " ${parts:-} " == *" $1 "* ]]; }  # $1: a part the script's PARTS names

# Each measure's values over the rounds go to a file of their own; tables show
# the median and the span.
rec() { echo "$2" >> "$tmp/m/${1//\//_}"; }  # $1: measure, $2: value
med() {
  sort -g "$tmp/m/${1//\//_}" | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
span() {  # $1: measure, $2: decimals (default 0)
  sort -g "$tmp/m/${1//\//_}" | awk -v d="${2:-0}" 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.*f–%.*f", d, lo, d, hi }'
}
ratio() { printf "%.2f" "$(echo "$1 / $2" | bc -l)"; }

thread_ticks() {  # $1: label, $2: pid; "label;tid;name ticks" per thread
  local t
  for t in /proc/"$2"/task/*; do  # a thread may end meanwhile
    { printf "%s;%s;%s %s\n" "$1" "${t##*/}" "$(tr ' ' _ < "$t/comm")" \
      "$(sed 's/.*) //' "$t/stat" | awk '{ print $12 + $13 }')"; } 2>/dev/null || true
  done
}

# A process's CPU, clock ticks: "all main io journal" (main: the thread whose
# id is the pid — a zmesh service's loop, redis-server's event loop; io:
# libzmq's I/O threads; journal: a zmesh journal's helper).
service_ticks() {  # $1: pid
  local t v total=0 main=0 io=0 journal=0
  for t in /proc/"$1"/task/*; do
    v=$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{ print $12 + $13 }') || continue
    total=$((total + ${v:-0}))
    case "$(cat "$t/comm" 2>/dev/null)" in
      ZMQbg/IO*) io=$((io + v)) ;;
      journal*) journal=$((journal + v)) ;;
    esac
    [ "${t##*/}" = "$1" ] && main=$v
  done
  echo "$total $main $io $journal"
}

incl() {  # $1: callgrind file, $2: "file.cpp:function(" as callgrind_annotate names it
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk -v name="$2" 'index($0, name) && !found { gsub(",", "", $1); print $1; found = 1 }'
}

ctx_switches() {  # $1: pid; context switches (voluntary + involuntary) of all its threads, summed
  # Each thread's own: a process's status shows only its main thread's. A
  # thread that ends meanwhile takes its count with it.
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '$1 == "voluntary_ctxt_switches:" || $1 == "nonvoluntary_ctxt_switches:" { sum += $2 } END { print sum + 0 }'
}

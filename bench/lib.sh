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

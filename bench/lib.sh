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

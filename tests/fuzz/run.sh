#!/usr/bin/env bash
# Runs every libFuzzer harness of a ZMESH_FUZZ build from its committed corpus,
# each for at most SECONDS seconds and RUNS inputs. New inputs go to a scratch
# corpus, crashes to <build>/fuzz-artifacts/ (add one to tests/fuzz/corpus/<harness>/
# and it is replayed by ctest from then on).
#   tests/fuzz/run.sh build-asan                             # CI: 35 s and 300k runs each
#   SECONDS_EACH=3600 RUNS=-1 tests/fuzz/run.sh build-asan   # a longer campaign
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:?usage: tests/fuzz/run.sh <build-dir>}
seconds=${SECONDS_EACH:-35}
runs=${RUNS:-300000}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
for harness in request reply event config journal http check bloom; do
  scratch=$(mktemp -d)
  echo "fuzz: $harness (${seconds}s, $runs runs at most)"
  if ! "$build/bin/${harness}_fuzz" -max_total_time="$seconds" -runs="$runs" -max_len=8192 \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/$harness-" \
      "$scratch" "tests/fuzz/corpus/$harness" >"$artifacts/$harness.log" 2>&1; then
    tail -60 "$artifacts/$harness.log"
    echo "fuzz: $harness FAILED; the input is in $artifacts/" >&2
    rm -rf "$scratch"
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$artifacts/$harness.log" || true
  rm -rf "$scratch"
done
echo "fuzz: every harness ran clean"

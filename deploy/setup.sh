#!/usr/bin/env bash
# Installs what zmesh needs on Debian bookworm (apt, only what is missing) and
# builds it. Run from anywhere; builds into <repo>/build (or $BUILD_DIR).
#
#   deploy/setup.sh              # runtime + build + test dependencies, then build
#   deploy/setup.sh --sanitize   # the same, built by clang with ASan + UBSan into build-asan/,
#                                # with the libFuzzer harnesses (tests/fuzz)
#   deploy/setup.sh --bench      # also the peers the benchmarks compare against
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=OFF
bench=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=ON ;;
    --bench) bench=1 ;;
    *) echo "setup.sh: unknown option '$arg' (known: --sanitize, --bench)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  capnproto libcapnp-dev            # IDL and dispatch
  libzmq3-dev cppzmq-dev            # transport
  libcli11-dev libtomlplusplus-dev  # flags, config
  libspdlog-dev libfmt-dev          # logs
  libxxhash-dev                     # checksums
  libjemalloc-dev                   # the services' allocator
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev  # gateway: Beast, Boost.JSON, Boost.URL
  catch2 python3 curl               # tests
  chromium-headless-shell           # tests: the dashboard (GET /ui) in a real browser
  prometheus                        # tests: promtool, Prometheus' own check of /metrics
  libsqlite3-dev libpq-dev          # the cache's backing stores: SQLite embedded, PostgreSQL
  postgresql                        # tests: a throwaway PostgreSQL server for the backing-store suite
)
# The OpenAPI validator the tests run needs node + npm; a newer node already on
# PATH (from elsewhere than apt) is kept as it is.
if ! command -v node >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi
if [ "$sanitize" = ON ]; then
  packages+=(clang libclang-rt-14-dev)  # the sanitizer build is clang's, for libFuzzer
fi
if [ "$bench" = 1 ]; then
  packages+=(redis-server redis-tools bc wrk webdis)
  # bench/lock_vs_etcd.sh: etcd 3.4, driven over HTTP (no etcdctl needed). The
  # script runs its own etcd on ports of its own, beside any the package starts.
  packages+=(etcd-server)
  # The instruction counts (bench/*.sh CALLGRIND=1 or PARTS=callgrind).
  packages+=(valgrind)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The OpenAPI validator of the test suite (openapi_lint), pinned, into .tools/.
redocly_version=2.77.0
if [ ! -x .tools/redocly/node_modules/.bin/redocly ]; then
  echo "setup.sh: installing @redocly/cli@$redocly_version into .tools/redocly"
  npm install --prefix .tools/redocly "@redocly/cli@$redocly_version" \
    --save-exact --no-audit --no-fund --no-update-notifier --loglevel=error >/dev/null
fi

# The browser test's driver (tests/browser), pinned, into .tools/; it drives
# the chromium-headless-shell above (no browser download: no network in tests).
puppeteer_version=24.43.1  # 24.x: the last major that runs on bookworm's Node 18 (25 needs 22)
if [ ! -f .tools/puppeteer/node_modules/puppeteer-core/package.json ] ||
   ! grep -q "\"version\": \"$puppeteer_version\"" .tools/puppeteer/node_modules/puppeteer-core/package.json; then
  echo "setup.sh: installing puppeteer-core@$puppeteer_version into .tools/puppeteer"
  npm install --prefix .tools/puppeteer "puppeteer-core@$puppeteer_version" \
    --save-exact --no-audit --no-fund --no-update-notifier --loglevel=error >/dev/null
fi

if [ "$sanitize" = ON ]; then
  build_dir=${BUILD_DIR:-build-asan}
  # clang, so the fuzz harnesses are built inside this build (libFuzzer).
  configure=(-DZMESH_SANITIZE=ON -DZMESH_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
else
  build_dir=${BUILD_DIR:-build}
  configure=(-DZMESH_SANITIZE=OFF)
fi
cmake -S . -B "$build_dir" -G Ninja "${configure[@]}" >/dev/null
cmake --build "$build_dir"

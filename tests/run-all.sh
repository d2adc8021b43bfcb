#!/usr/bin/env bash
# The whole test suite, from a fresh clone on Debian 12 / Ubuntu:
#   tests/run-all.sh [--no-install]
#   1. installs the packages it needs (tests/install-deps.sh; --no-install skips it),
#   2. builds and runs every test (unit + integration) in a plain build,
#   3. builds and runs them again under AddressSanitizer + UBSan,
#   4. builds the libFuzzer targets with clang and runs each from its seed corpus
#      for MI_FUZZ_SECONDS (default 60) seconds (tests/fuzz/run.sh),
#   5. cross-builds the Windows target and tests it under Wine.
# Build directories: build/, build-asan/, build-fuzz/, build-windows/ (kept for fast re-runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="$(nproc)"

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    *) echo "usage: tests/run-all.sh [--no-install]" >&2; exit 2 ;;
  esac
done
if [ "$install" = 1 ]; then "$root/tests/install-deps.sh"; fi

run_suite() {
  local dir="$1" exclude="$2"; shift 2
  echo "=== build $dir ($*)"
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "=== test $dir"
  (cd "$dir" && ctest --output-on-failure -j 2 --timeout 900 ${exclude:+-E "$exclude"})
}

run_suite build "" -DCMAKE_BUILD_TYPE=RelWithDebInfo
# Sanitizers: leaks, use-after-free, UB; halt on the first report.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# The package test installs and purges the .deb on this machine, the nspawn
# test boots the .deb in a container: once is enough.
run_suite build-asan "integration.test_package|integration.test_nspawn" -DCMAKE_BUILD_TYPE=Debug -DMI_ASAN=ON
unset ASAN_OPTIONS UBSAN_OPTIONS

# Fuzzing: a crash, sanitizer report, leak or timeout fails the run.
"$root/tests/fuzz/run.sh"

if [ -x "$root/tests/windows/build-and-test.sh" ]; then
  echo "=== Windows (mingw-w64 + Wine)"
  "$root/tests/windows/build-and-test.sh" "$root/build-windows"
fi
echo "=== all test stages passed"

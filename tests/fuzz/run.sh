#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + libFuzzer) and runs
# each for a bounded time from its committed seed corpus. Any crash, sanitizer
# report, leak or timeout fails the stage (non-zero exit), with the input that
# did it printed in base64 and hex.
#
#   tests/fuzz/run.sh [target...]        default: every target in tests/fuzz/corpus/
#
# Environment:
#   MI_FUZZ_SECONDS   seconds per target (default 60)
#   MI_FUZZ_BUILD     build directory (default build-fuzz)
#   MI_FUZZ_ARGS      extra libFuzzer flags, e.g. "-runs=10000000" for a long run
#   MI_FUZZ_KEEP      directory to keep the run's corpora and crash files in
#                     (default: a temporary directory, removed afterwards)
#
# The seed corpus is copied first: new inputs never land in the repository.
# Reproduce a failure with: build-fuzz/tests/<target> <crash file>
# (http_request_fuzz prints each exchange with MI_FUZZ_PRINT=1).
# Targets: request_parser_fuzz (the HTTP parser alone, on bytes split at
# input-chosen points), http_request_fuzz (a whole connection through the
# server and the token API), imds_body_fuzz, request_params_fuzz, config_fuzz.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
seconds="${MI_FUZZ_SECONDS:-60}"
build="${MI_FUZZ_BUILD:-build-fuzz}"
corpus_root="$root/tests/fuzz/corpus"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for d in "$corpus_root"/*/; do targets+=("$(basename "$d")"); done
fi

echo "=== fuzz: build $build (clang, -fsanitize=fuzzer,address,undefined)"
if [ ! -f "$build/CMakeCache.txt" ]; then
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMI_FUZZ=ON -DMI_TESTS=ON "${launcher[@]}" >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

work="${MI_FUZZ_KEEP:-}"
if [ -z "$work" ]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/mi-fuzz.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"

# A report is fatal: abort (libFuzzer saves the input), leaks checked per input.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Hostile input must not recurse deep: a 2 MB stack (MinGW's default for
# Windows threads) instead of Linux's 8 MB makes such recursion a crash here.
ulimit -s 2048

failed=()
for t in "${targets[@]}"; do
  bin="$build/tests/$t"
  seeds="$corpus_root/$t"
  run_dir="$work/$t"
  rm -rf "$run_dir"
  mkdir -p "$run_dir/corpus" "$run_dir/artifacts"
  cp -R "$seeds/." "$run_dir/corpus/"
  dict=()
  if [ -f "$root/tests/fuzz/$t.dict" ]; then dict=(-dict="$root/tests/fuzz/$t.dict"); fi
  echo "=== fuzz: $t for ${seconds}s ($(ls "$seeds" | wc -l) seeds)"
  rc=0
  # shellcheck disable=SC2086  # MI_FUZZ_ARGS is a list of flags
  "$bin" "$run_dir/corpus" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -detect_leaks=1 -print_final_stats=1 -artifact_prefix="$run_dir/artifacts/" ${MI_FUZZ_ARGS:-} \
    >"$run_dir/log" 2>&1 || rc=$?
  grep -E '^(stat::|Done |INFO: -max_len)' "$run_dir/log" | awk '!seen[$0]++' || true
  artifacts=("$run_dir"/artifacts/*)
  if [ "$rc" -ne 0 ] || [ -e "${artifacts[0]}" ]; then
    failed+=("$t")
    echo "!!! fuzz: $t FAILED (exit $rc); the report:"
    grep -m1 -B2 -A40 -E '==[0-9]+==ERROR|runtime error|_fuzz: |ERROR: libFuzzer' "$run_dir/log" || tail -n 60 "$run_dir/log"
    for a in "${artifacts[@]}"; do
      [ -e "$a" ] || continue
      echo "--- input: $a ($(stat -c %s "$a") bytes)"
      echo "base64 (first 4096 bytes): $(head -c 4096 "$a" | base64 -w0)"
      echo "hex (first 1024 bytes): $(head -c 1024 "$a" | od -An -tx1 -v | tr -s ' \n' ' ')"
    done
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "=== fuzz: FAILED: ${failed[*]} (logs and inputs: $work)"
  trap - EXIT
  exit 1
fi
echo "=== fuzz: all targets passed"

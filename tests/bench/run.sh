#!/usr/bin/env bash
# mi-agent vs nginx proxy_cache, side by side (issue #7). One command:
#
#   tests/bench/run.sh [--quick] [bench.py options...]
#
# Installs what it needs (apt: nginx-light, wrk, gnuplot-nox; sudo only when not
# root; nothing if already there), builds mi-agent and imds-emulator (Release)
# if needed, then runs tests/bench/bench.py, which starts the emulator,
# mi-agent and a private nginx (foreground, config under a temp dir, never the
# system service), measures, stops everything, and writes
#   tests/bench/results/latest.md   the tables, machine, command, targets
#   tests/bench/results/latest.png  req/s and CPU/request vs connections
#   tests/bench/results/latest.json every run's raw figures
# Takes about 5 minutes (--quick: about 1). Not part of the test suite.
#
# Environment:
#   BUILD_DIR        build directory (default: build/ if it is a Release build,
#                    else build-bench-release/)
#   MI_AGENT_BIN, IMDS_EMULATOR_BIN   use these binaries, skip the build
#   BENCH_NO_INSTALL=1                never call apt-get
# Options after --quick go to bench.py (see tests/bench/bench.py --help), e.g.
#   --conns 1,64 --duration 10 --reps 5 --phases throughput,burst
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$SRC/tests/bench"
COMMAND="tests/bench/run.sh${*:+ $*}"

QUICK=()
if [[ "${1:-}" == "--quick" ]]; then
  QUICK=(--duration 2 --reps 1 --ready-runs 3)
  shift
fi

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- tools -------------------------------------------------------------------
SUDO=()
if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
[[ -x /usr/bin/python3 ]] || need+=(python3)
if ((${#need[@]})); then
  if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
    log "missing: ${need[*]} (BENCH_NO_INSTALL=1)"; exit 1
  fi
  log "installing ${need[*]}"
  # Installing nginx may start the distribution's service; we never use or touch it.
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- binaries ------------------------------------------------------------------
if [[ -n "${MI_AGENT_BIN:-}" && -n "${IMDS_EMULATOR_BIN:-}" ]]; then
  AGENT=$MI_AGENT_BIN; EMULATOR=$IMDS_EMULATOR_BIN
else
  if [[ -z "${BUILD_DIR:-}" ]]; then
    BUILD_DIR="$SRC/build"
    if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] &&
       ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD_DIR/CMakeCache.txt"; then
      BUILD_DIR="$SRC/build-bench-release"  # never reconfigure someone's Debug build
    fi
  fi
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    log "configuring $BUILD_DIR (Release)"
    gen=(); command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
    cmake -S "$SRC" -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  log "building mi-agent and imds-emulator in $BUILD_DIR"
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target mi-agent imds-emulator >/dev/null
  AGENT="$BUILD_DIR/mi-agent"; EMULATOR="$BUILD_DIR/tests/imds-emulator"
fi

# --- limits ----------------------------------------------------------------------
# 10,000 idle connections: the client and mi-agent each need that many fds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- run -------------------------------------------------------------------------
PIDFILE=$(mktemp /tmp/mi-bench-pids.XXXXXX)
cleanup() {
  # bench.py stops its processes itself; this catches what a killed bench.py left.
  # Only pids bench.py recorded (each leads its own session/process group).
  local pid
  while read -r pid; do
    [[ -n "$pid" ]] || continue
    if kill -0 -- "-$pid" 2>/dev/null; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
  done <"$PIDFILE"
  sleep 0.3
  while read -r pid; do
    [[ -n "$pid" ]] || continue
    if kill -0 -- "-$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  done <"$PIDFILE"
  rm -f "$PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

NOTE=""
if (( $(nproc) < 4 )); then
  NOTE="Only $(nproc) CPUs: server and load generator have one core each and share them with anything else running (see the load average and the server/wrk core columns: well below 100% means other work held the cores). Compare CPU per request and ratios; absolute req/s and latency are indicative only."
fi

log "ulimit -n $(ulimit -n); mi-agent $AGENT; emulator $EMULATOR; nginx $NGINX"
/usr/bin/python3 "$HERE/bench.py" --agent "$AGENT" --emulator "$EMULATOR" --nginx "$NGINX" \
  --gnuplot "$(command -v gnuplot)" --source "$SRC" --out "$HERE/results" --pidfile "$PIDFILE" \
  --command "$COMMAND" --noisy-note "$NOTE" "${QUICK[@]}" "$@"

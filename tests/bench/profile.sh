#!/usr/bin/env bash
# Profiles mi-agent's cached-token hot path under callgrind (issue #7).
#
#   tests/bench/profile.sh [SECONDS] [CONNECTIONS]     (default 10 s, 16 connections)
#
# Starts the IMDS emulator and mi-agent under `valgrind --tool=callgrind` with
# collection off, warms the cache, turns instrumentation on only for a bounded wrk
# run of cached requests, stops everything, and prints instructions per request
# and the top functions (self and inclusive). Output files:
#   tests/bench/results/callgrind.out        (open with callgrind_annotate / kcachegrind)
#   tests/bench/results/profile-latest.txt   (the printed summary)
# Uses the binaries from run.sh's build (BUILD_DIR, MI_AGENT_BIN, IMDS_EMULATOR_BIN as there).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$SRC/tests/bench/results"
SECS=${1:-10}
CONNS=${2:-16}
BUILD_DIR=${BUILD_DIR:-$SRC/build}
AGENT=${MI_AGENT_BIN:-$BUILD_DIR/mi-agent}
EMULATOR=${IMDS_EMULATOR_BIN:-$BUILD_DIR/tests/imds-emulator}
for t in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$t" >/dev/null || { echo "profile.sh: needs $t (apt-get install valgrind wrk)"; exit 1; }
done
[[ -x "$AGENT" && -x "$EMULATOR" ]] || { echo "profile.sh: build first (tests/bench/run.sh builds)"; exit 1; }
mkdir -p "$OUT"

WORK=$(mktemp -d /tmp/mi-profile.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

"$EMULATOR" --port 0 --port-file "$WORK/emu.port" >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s "$WORK/emu.port" ]] && break; sleep 0.1; done
EMU_PORT=$(cat "$WORK/emu.port")
PORT=$(free_port); HPORT=$(free_port)
cat >"$WORK/agent.json" <<EOF
{"port": $PORT, "listen": ["127.0.0.1"], "health": ["127.0.0.1:$HPORT"],
 "imds": {"endpoint": "http://127.0.0.1:$EMU_PORT/metadata/identity/oauth2/token"},
 "log": {"level": "warning", "format": "text"}}
EOF

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$AGENT" --config "$WORK/agent.json" >"$WORK/agent.log" 2>&1 &
VG=$!
PIDS+=($VG)
ready=0
for _ in $(seq 600); do  # <= 60 s: valgrind start-up is slow
  if /usr/bin/python3 -c "import http.client as h,sys;c=h.HTTPConnection('127.0.0.1',$HPORT,timeout=1);c.request('GET','/readyz');sys.exit(c.getresponse().status!=200)" 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.1
done
((ready)) || { echo "profile.sh: mi-agent under valgrind not ready"; cat "$WORK/agent.log"; exit 1; }

URL="http://127.0.0.1:$PORT/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F"
wrk -t1 -c"$CONNS" -d2s -H 'Metadata: true' "$URL" >/dev/null  # warm: cache, connections, allocator
callgrind_control -i on "$VG" >/dev/null
wrk -t1 -c"$CONNS" -d"${SECS}s" -H 'Metadata: true' "$URL" | tee "$WORK/wrk.txt"
callgrind_control -i off "$VG" >/dev/null
kill -TERM "$VG"
for _ in $(seq 300); do kill -0 "$VG" 2>/dev/null || break; sleep 0.1; done

REQS=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
TOTAL=$(awk '/^totals:/ {print $2; exit}' "$OUT/callgrind.out")
{
  echo "# mi-agent cached-token hot path, callgrind ($(date -u +%F), $CONNS connections, ${SECS} s)"
  echo "requests: $REQS  instructions (Ir): $TOTAL  Ir/request: $(( TOTAL / (REQS > 0 ? REQS : 1) ))"
  echo
  echo "## self cost (top 35)"
  callgrind_annotate --threshold=99 "$OUT/callgrind.out" 2>/dev/null | sed -n '/^Ir/,$p' | head -40
  echo
  echo "## inclusive cost (top 45)"
  callgrind_annotate --inclusive=yes --threshold=99 "$OUT/callgrind.out" 2>/dev/null | sed -n '/^Ir/,$p' | head -50
} | tee "$OUT/profile-latest.txt"

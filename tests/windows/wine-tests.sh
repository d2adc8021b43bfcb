# Tests of the Windows build under Wine; sourced by build-and-test.sh, which
# provides run, check, log, the paths (AGENT_EXE, EMULATOR_EXE, NSIS_SETUP, MSI,
# BUILD_DIR, LOGS) and WINEPREFIX. All traffic stays on 127.0.0.1 / ::1, on
# ports picked free at run time; Linux curl is the client.

DRIVE_C=$WINEPREFIX/drive_c
PROGRAM_DIR="$DRIVE_C/Program Files/mi-agent"
DATA_DIR=$DRIVE_C/ProgramData/mi-agent
SERVICE_LOG=$DATA_DIR/mi-agent.log
DISCOVERY=$DRIVE_C/WindowsAzure/Config/ManagedIdentity-Settings
IT=$BUILD_DIR/it
EMU_PID=""
AGENT_PID=""
EMU_PORT=""
OUTSIDE_PID=""

# ---------------------------------------------------------------- helpers

zpath() { local p=${1//\//\\}; printf 'Z:%s' "$p"; }  # Wine maps Z: to /

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local what=$1 timeout=$2
  shift 2
  local end=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.3
  done
}

http_ok() { curl -sf --noproxy '*' --max-time 5 -o /dev/null "$1"; }

# config_json PORT HEALTH_PORT: an agent config that fetches from the emulator.
config_json() {
  local listen='"127.0.0.1"'
  # Both loopbacks, as in production, when the host has IPv6 loopback.
  if grep -q '^0\{31\}1 ' /proc/net/if_inet6 2>/dev/null; then listen='"127.0.0.1", "::1"'; fi
  printf '{\n  "port": %s,\n  "listen": [%s],\n  "health": ["127.0.0.1:%s"],\n  "imds": {"endpoint": "http://127.0.0.1:%s/metadata/identity/oauth2/token"}\n}\n' \
    "$1" "$listen" "$2" "$EMU_PORT"
}

# token_request NAME PORT [HOST] CURL_ARGS...: asserts 200 and a usable token.
token_request() {
  local name=$1 port=$2 host=$3 out="$IT/$1.json" code
  shift 3
  code=$(curl -sS --noproxy '*' --max-time 40 -o "$out" -w '%{http_code}' "$@" "http://$host:$port/oauth2/token") || return 1
  echo "HTTP $code: $(sed 's/"access_token":"[^"]*"/"access_token":"(redacted)"/' "$out" | head -c 600)"
  [ "$code" = 200 ] || return 1
  "$PY" - "$out" <<'EOF'
import json, sys
body = json.load(open(sys.argv[1]))
assert body.get("token_type") == "Bearer", body
assert body.get("access_token"), body
assert str(body.get("expires_on", "")).isdigit(), body
EOF
}

legacy_get() {  # PORT [HOST]
  token_request "get-$1" "$1" "${2:-127.0.0.1}" -G -H 'Metadata: true' \
    --data-urlencode 'resource=https://management.azure.com/'
}

legacy_post() {  # PORT
  token_request "post-$1" "$1" 127.0.0.1 -H 'Metadata: true' \
    -H 'Content-Type: application/x-www-form-urlencoded; charset=UTF-8' \
    --data 'resource=https%3A%2F%2Fvault.azure.net&api-version=2018-02-01'
}

imds_shaped() {  # PORT
  local out="$IT/imds-$1.json" code
  code=$(curl -sS --noproxy '*' --max-time 40 -o "$out" -w '%{http_code}' -H 'Metadata: true' \
    "http://127.0.0.1:$1/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F") || return 1
  echo "HTTP $code: $(head -c 400 "$out")"
  [ "$code" = 200 ] && grep -q '"token_type":"Bearer"' "$out"
}

no_metadata_400() {  # PORT
  local out="$IT/nometa-$1.json" code
  code=$(curl -sS --noproxy '*' --max-time 20 -o "$out" -w '%{http_code}' \
    "http://127.0.0.1:$1/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F") || return 1
  echo "HTTP $code: $(cat "$out")"
  [ "$code" = 400 ] && grep -q '"bad_request_102"' "$out"
}

svc_state() { wine sc query "$SERVICE" 2>/dev/null | tr -d '\r' | awk '/STATE/ { print $4; exit }'; }
svc_is() { [ "$(svc_state)" = "$1" ]; }
svc_absent() { ! wine sc query "$SERVICE" >/dev/null 2>&1; }

sc_start() {
  wine sc start "$SERVICE" | tr -d '\r'
  wait_for "service RUNNING" 60 svc_is RUNNING
}

sc_stop() {
  wine sc stop "$SERVICE" | tr -d '\r'
  wait_for "service STOPPED" 60 svc_is STOPPED
}

drain_logged() {  # the log file has CRLF line ends
  local text
  text=$(tr -d '\r' <"$SERVICE_LOG") || return 1
  printf -- '--- %s\n%s\n' "$SERVICE_LOG" "$text"
  grep -q 'drained$' <<<"$text" && grep -q 'service: stopped$' <<<"$text"
}

files_gone() {
  [ ! -e "$PROGRAM_DIR/mi-agent.exe" ] && [ ! -e "$PROGRAM_DIR" ] && [ ! -e "$DISCOVERY" ]
}

uninstalled() { svc_absent && files_gone; }

# wait_uninstalled: polls, and on a timeout shows what is left.
wait_uninstalled() {
  wait_for "service and files removed" 30 uninstalled && return 0
  wine sc query "$SERVICE" 2>&1 | tr -d '\r'
  ls -la "$PROGRAM_DIR" "$DISCOVERY" 2>&1
  return 1
}

write_data_config() {  # PORT HEALTH_PORT: the config the installed service will use
  mkdir -p "$DATA_DIR"
  config_json "$1" "$2" >"$DATA_DIR/config.json"
}

stop_console_processes() {
  local pid
  for pid in $AGENT_PID $EMU_PID $OUTSIDE_PID; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  AGENT_PID=""
  EMU_PID=""
  OUTSIDE_PID=""
}

# ---------------------------------------------------------------- stages

start_wine() {
  # A fresh prefix each run: services, MSI product and component registrations
  # and files left by an earlier (failed) run would change what the tests see.
  # MI_WINE_KEEP=1 reuses it (faster when iterating; state may leak).
  wineserver -k >/dev/null 2>&1 || true
  if [ "${MI_WINE_KEEP:-0}" != 1 ]; then rm -rf "$WINEPREFIX"; fi
  if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
    # Fails on "failed to open syswow64\rundll32.exe" (no wine32), which is
    # harmless: judge by the result.
    run wineboot wineboot -i || true
    if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
      log "wineboot did not create $WINEPREFIX"
      return 1
    fi
    # Let wineboot's server save the registry and exit before ours starts.
    wineserver -w
  fi
  # A persistent, warm wineserver: the first Wine process starts services.exe,
  # plugplay, rpcss... which inherit its stdout; started here, with /dev/null,
  # they cannot hold ctest's pipes open. It also saves 1-4 s per Wine process.
  wineserver -p </dev/null >/dev/null 2>&1
  WINE_STARTED=1
  wine cmd /c exit </dev/null >/dev/null 2>&1
  if [ "${MI_WINE_KEEP:-0}" = 1 ]; then
    wine sc stop "$SERVICE" >/dev/null 2>&1 || true
    wine sc delete "$SERVICE" >/dev/null 2>&1 || true
    rm -rf "$PROGRAM_DIR" "$DATA_DIR" "$DRIVE_C/WindowsAzure" "$DRIVE_C/mi-agent-test"
  fi
  rm -rf "$IT"
  mkdir -p "$IT"
}

integration_tests() {
  wine "$EMULATOR_EXE" --port 0 --port-file "$(zpath "$IT/emulator.port")" --log-requests \
    </dev/null >"$LOGS/emulator.log" 2>&1 &
  EMU_PID=$!
  if ! wait_for "imds-emulator.exe port file" 60 test -s "$IT/emulator.port"; then
    FAILED+=(integration.emulator-start)
    tail -n 20 "$LOGS/emulator.log"
    return
  fi
  EMU_PORT=$(tr -dc 0-9 <"$IT/emulator.port")
  log "imds-emulator.exe on 127.0.0.1:$EMU_PORT"

  local port health
  port=$(free_port)
  health=$(free_port)
  config_json "$port" "$health" >"$IT/agent.json"
  wine "$AGENT_EXE" --config "$(zpath "$IT/agent.json")" --log-format text \
    </dev/null >"$LOGS/agent-console.log" 2>&1 &
  AGENT_PID=$!
  check integration.agent-ready wait_for "mi-agent.exe /readyz" 60 http_ok "http://127.0.0.1:$health/readyz"
  log "mi-agent.exe on 127.0.0.1:$port (health $health)"
  check integration.legacy-get legacy_get "$port"
  check integration.legacy-post legacy_post "$port"
  check integration.imds-shaped-get imds_shaped "$port"
  check integration.no-metadata-400 no_metadata_400 "$port"
  if grep -q '"::1"' "$IT/agent.json"; then
    check integration.ipv6-loopback legacy_get "$port" '[::1]'
  fi
  check integration.healthz http_ok "http://127.0.0.1:$health/healthz"
  kill "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
  AGENT_PID=""
}

service_tests() {
  if [ -z "$EMU_PORT" ]; then
    FAILED+=(service.no-emulator)
    return
  fi
  local dir=$DRIVE_C/mi-agent-test port health
  port=$(free_port)
  health=$(free_port)
  mkdir -p "$dir"
  cp "$AGENT_EXE" "$dir/mi-agent.exe"
  config_json "$port" "$health" >"$dir/config.json"
  rm -f "$SERVICE_LOG"
  # `mi-agent.exe service` by hand must refuse with a hint. Wine takes ~10 s to
  # give up on the SCM connection, so this runs alongside the other tests;
  # outside_scm_refused collects it at the end.
  wine "$AGENT_EXE" service </dev/null >"$IT/outside-scm.log" 2>&1 &
  OUTSIDE_PID=$!
  check service.create wine sc create "$SERVICE" \
    binpath= '"C:\mi-agent-test\mi-agent.exe" service --config C:\mi-agent-test\config.json' start= demand
  check service.start sc_start
  check service.legacy-get legacy_get "$port"
  check service.legacy-post legacy_post "$port"
  check service.stop sc_stop
  check service.drain-logged drain_logged
  check service.delete wine sc delete "$SERVICE"
  check service.gone wait_for "service deleted" 30 svc_absent

  # A start that cannot succeed (a missing --config file) ends in STOPPED with
  # a service-specific exit code, and the log says why.
  check service.bad-config-create wine sc create "$SERVICE" \
    binpath= '"C:\mi-agent-test\mi-agent.exe" service --config C:\mi-agent-test\missing.json' start= demand
  wine sc start "$SERVICE" >/dev/null 2>&1 || true
  check service.bad-config-stopped failed_start_reported
  check service.bad-config-delete wine sc delete "$SERVICE"
  wait_for "service deleted" 30 svc_absent || true
}

failed_start_reported() {
  wait_for "service STOPPED" 60 svc_is STOPPED || return 1
  local query log_text
  query=$(wine sc query "$SERVICE" | tr -d '\r')
  log_text=$(tr -d '\r' <"$SERVICE_LOG")
  printf '%s\n--- %s\n%s\n' "$query" "$SERVICE_LOG" "$log_text"
  grep -q 'WIN32_EXIT_CODE *: 1066' <<<"$query" &&  # ERROR_SERVICE_SPECIFIC_ERROR
    grep -qE 'SERVICE_EXIT_CODE *: *78\b' <<<"$query" &&  # EX_CONFIG, as on Linux
    grep -q 'service: cannot start: invalid configuration' <<<"$log_text"
}

outside_scm_refused() {
  local rc=0
  [ -n "$OUTSIDE_PID" ] || return 1
  wait "$OUTSIDE_PID" || rc=$?
  OUTSIDE_PID=""
  echo "exit code $rc: $(cat "$IT/outside-scm.log")"
  [ "$rc" -ne 0 ] && grep -q 'sc start mi-agent' "$IT/outside-scm.log"
}

installer_tests() {
  if [ -z "$EMU_PORT" ]; then
    FAILED+=(installer.no-emulator)
    return
  fi
  local port health
  # NSIS. A config written beforehand (pointing at the emulator) must survive the install.
  port=$(free_port)
  health=$(free_port)
  write_data_config "$port" "$health"
  rm -f "$SERVICE_LOG"
  check nsis.install wine "$NSIS_SETUP" /S "/PORT=$port"
  check nsis.running wait_for "service RUNNING" 60 svc_is RUNNING
  check nsis.legacy-get legacy_get "$port"
  check nsis.discovery-file grep -q "\"url\":\"http://localhost:$port/oauth2/token\"" "$DISCOVERY"
  # The uninstaller copies itself to %TEMP% and returns at once: poll.
  check nsis.uninstall wine "$PROGRAM_DIR/uninstall.exe" /S
  check nsis.uninstalled wait_uninstalled
  check nsis.config-kept test -f "$DATA_DIR/config.json"
  check nsis.log-removed test ! -e "$SERVICE_LOG"

  # MSI (wixl), over the kept config.
  port=$(free_port)
  health=$(free_port)
  write_data_config "$port" "$health"
  check msi.install wine msiexec /i "$(zpath "$MSI")" /qn
  check msi.running wait_for "service RUNNING" 60 svc_is RUNNING
  check msi.legacy-get legacy_get "$port"
  check msi.discovery-file test -f "$DISCOVERY"
  check msi.uninstall wine msiexec /x "$(zpath "$MSI")" /qn
  check msi.uninstalled wait_uninstalled
  check msi.config-kept test -f "$DATA_DIR/config.json"

  # NSIS again, uninstalled with /REMOVECONFIG: nothing of mi-agent is left.
  port=$(free_port)
  health=$(free_port)
  write_data_config "$port" "$health"
  check nsis2.install wine "$NSIS_SETUP" /S "/PORT=$port"
  check nsis2.running wait_for "service RUNNING" 60 svc_is RUNNING
  check nsis2.uninstall wine "$PROGRAM_DIR/uninstall.exe" /S /REMOVECONFIG
  check nsis2.uninstalled wait_uninstalled
  check nsis2.config-removed wait_for "config removed" 30 test ! -e "$DATA_DIR"
}

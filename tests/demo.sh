#!/usr/bin/env bash
# The demo: builds mi-agent, starts the IMDS emulator and the agent on this
# machine's loopback, fetches tokens the way a legacy app does (GET and POST, the
# system-assigned and a user-assigned identity), shows the health report, stops.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/tests/install-deps.sh" "$root/tests/deps/base.txt"

echo "== building (build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target mi-agent imds-emulator >/dev/null

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The legacy port, unless something already holds it.
port=50342
health=50343
if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then port=$((RANDOM % 10000 + 40000)); health=$((port + 1)); fi

client_id="0d1e2f30-aaaa-4bbb-8ccc-123456789abc"
object_id="9f8e7d6c-1111-4222-8333-abcdefabcdef"
res_id="/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/demo-app"

echo "== starting the IMDS emulator (system-assigned + one user-assigned identity)"
build/tests/imds-emulator --port 0 --port-file "$work/imds.port" \
  --user-assigned "$client_id,$object_id,$res_id" >"$work/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/imds.port" ] && break; sleep 0.05; done
imds_port="$(cat "$work/imds.port")"
echo "   emulator on 127.0.0.1:$imds_port"

echo "== starting mi-agent on localhost:$port (health on 127.0.0.1:$health)"
cat >"$work/config.json" <<JSON
{
  "port": $port,
  "health": ["127.0.0.1:$health"],
  "imds": {"endpoint": "http://127.0.0.1:$imds_port/metadata/identity/oauth2/token"},
  "prefetch": [{"resource": "https://management.azure.com/"}]
}
JSON
build/mi-agent --config "$work/config.json" --log-format text 2>"$work/agent.log" &
pids+=($!)
ready=0
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$health/readyz" >/dev/null && { ready=1; break; }; sleep 0.05; done
if [ "$ready" != 1 ]; then
  echo "mi-agent did not become ready within 10 s; its log:" >&2
  cat "$work/agent.log" >&2
  exit 1
fi

show() { echo; echo "\$ $*"; "$@"; echo; }
redact() { sed -E 's/"access_token":"([^"]{12})[^"]*"/"access_token":"\1…(redacted)"/'; }

echo "== a legacy app asks for a token (system-assigned identity)"
echo "\$ curl -s -H Metadata:true 'http://localhost:$port/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F'"
curl -s -H Metadata:true "http://localhost:$port/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F" | redact; echo

echo "== the POST form, user-assigned identity by client_id"
echo "\$ curl -s -H Metadata:true -d 'resource=https://vault.azure.net&client_id=$client_id' http://localhost:$port/oauth2/token"
curl -s -H Metadata:true -d "resource=https://vault.azure.net&client_id=$client_id" "http://localhost:$port/oauth2/token" | redact; echo

echo "== the same identity by its legacy msi_res_id"
curl -s -H Metadata:true --get --data-urlencode "resource=https://vault.azure.net" \
  --data-urlencode "msi_res_id=$res_id" "http://localhost:$port/oauth2/token" | redact; echo

echo "== without the Metadata header"
curl -s -w ' (HTTP %{http_code})' "http://localhost:$port/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F"; echo

imds_count="$(curl -s "http://127.0.0.1:$imds_port/admin/requests" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')"
echo; echo "== IMDS saw $imds_count request(s): the prefetch at start-up and one per new key; the first answer above came from the prefetched cache"

echo; echo "== health report: GET http://127.0.0.1:$health/status"
curl -s "http://127.0.0.1:$health/status" | python3 -m json.tool
echo; echo "== mi-agent status (exit 0: every identity ok)"
build/mi-agent status --health "127.0.0.1:$health" || true

echo; echo "== agent log"
cat "$work/agent.log"

#!/usr/bin/env bash
# Builds the Windows installers from a cross-built mi-agent.exe:
#   OUT_DIR/mi-agent-VERSION-setup.exe   NSIS (makensis, package nsis)
#   OUT_DIR/mi-agent-VERSION.msi         MSI  (wixl, package wixl)
#
#   packaging/windows/build-installers.sh MI_AGENT_EXE OUT_DIR VERSION
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 MI_AGENT_EXE OUT_DIR VERSION" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXE=$(realpath "$1")
OUT=$(realpath -m "$2")
VERSION=$3
STAGE=$OUT/stage

rm -rf "$STAGE"
mkdir -p "$STAGE"
# The installers ship a stripped copy; the build keeps its symbols.
x86_64-w64-mingw32-strip -o "$STAGE/mi-agent.exe" "$EXE"
# The MSI's discovery file (the NSIS script writes its own, for its /PORT=).
printf '{"url":"http://localhost:50342/oauth2/token"}' >"$STAGE/ManagedIdentity-Settings"

makensis -V2 -DVERSION="$VERSION" -DAGENT_EXE="$STAGE/mi-agent.exe" \
  -DOUT_FILE="$OUT/mi-agent-$VERSION-setup.exe" "$HERE/mi-agent.nsi"
cp "$HERE/mi-agent.wxs" "$STAGE/"
(cd "$STAGE" && wixl -a x64 -D Version="$VERSION" -o "$OUT/mi-agent-$VERSION.msi" mi-agent.wxs)
echo "built $OUT/mi-agent-$VERSION-setup.exe and $OUT/mi-agent-$VERSION.msi"

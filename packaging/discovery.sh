# The discovery file that old client libraries read to find the token endpoint
# (the retired VM extension wrote it). The port comes from the config file's
# "port" key when it holds a valid one, else the default.
mi_agent_discovery=/var/lib/waagent/ManagedIdentity-Settings

mi_agent_write_discovery() {
	port=$(sed -n 's/.*"port"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' \
		/etc/mi-agent/config.json 2>/dev/null | head -n 1)
	case "$port" in
	'' | *[!0-9]* | ??????*) port=50342 ;;
	esac
	if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
		port=50342
	fi
	[ -d /var/lib/waagent ] || mkdir -m 0755 /var/lib/waagent
	tmp="$mi_agent_discovery.mi-agent-new"
	printf '{"url":"http://localhost:%s/oauth2/token"}' "$port" >"$tmp" &&
		chmod 0644 "$tmp" && mv -f "$tmp" "$mi_agent_discovery"
}

# Removes the file only if it is ours (it points at a localhost port).
mi_agent_remove_discovery() {
	if [ -f "$mi_agent_discovery" ] &&
		grep -q '^{"url":"http://localhost:[0-9]*/oauth2/token"}' "$mi_agent_discovery"; then
		rm -f "$mi_agent_discovery"
	fi
	rm -f "$mi_agent_discovery.mi-agent-new"
	# Left by us with nothing else in it: the Azure guest agent keeps its own
	# state there and is never empty.
	rmdir /var/lib/waagent 2>/dev/null || true
}

# Azure Arc-enabled servers (config "imds.kind": "arc" or "auto"): himds writes
# its challenge files to /var/opt/azcmagent/tokens, readable by root and the
# himds group. The unit cannot name a group that may not exist (the service
# would not start), so the drop-in below adds it only where the Arc agent
# created it. Run again on every install and upgrade: an Arc agent installed
# later is picked up by reinstalling (or by running the same two lines by hand).
mi_agent_arc_dropin_dir=/etc/systemd/system/mi-agent.service.d
mi_agent_arc_dropin=$mi_agent_arc_dropin_dir/arc.conf

mi_agent_write_arc_dropin() {
	getent group himds >/dev/null || return 0
	[ -d "$mi_agent_arc_dropin_dir" ] || mkdir -m 0755 -p "$mi_agent_arc_dropin_dir" || return 1
	tmp="$mi_agent_arc_dropin.mi-agent-new"
	printf '%s\n' "# Written by the mi-agent package: the Azure Arc agent's himds group reads its tokens directory." \
		"[Service]" "SupplementaryGroups=himds" >"$tmp" &&
		chmod 0644 "$tmp" && mv -f "$tmp" "$mi_agent_arc_dropin"
}

mi_agent_remove_arc_dropin() {
	rm -f "$mi_agent_arc_dropin"
	rmdir "$mi_agent_arc_dropin_dir" 2>/dev/null || :
}

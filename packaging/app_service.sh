# The App Service dialects' shared secret (config "dialects.app_service"):
# created once with random content and never replaced (applications hold it in
# their environment), readable by root and the mi-agent-clients group, which
# operators add applications' users to. The service joins that group through
# SupplementaryGroups= in mi-agent.service.
mi_agent_clients_group=mi-agent-clients
mi_agent_app_service_secret=/etc/mi-agent/app-service.secret

mi_agent_make_app_service_secret() {
	getent group "$mi_agent_clients_group" >/dev/null ||
		groupadd --system "$mi_agent_clients_group" || return 1
	[ -e "$mi_agent_app_service_secret" ] && return 0
	[ -d /etc/mi-agent ] || mkdir -m 0755 /etc/mi-agent
	tmp="$mi_agent_app_service_secret.mi-agent-new"
	rm -f "$tmp"
	(umask 0077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$tmp") &&
		chgrp "$mi_agent_clients_group" "$tmp" && chmod 0640 "$tmp" &&
		mv -f "$tmp" "$mi_agent_app_service_secret"
}

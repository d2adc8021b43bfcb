# mi-agent %preun ($1: 0 erase, 1 upgrade): on erase, stop and disable.
if [ "$1" -eq 0 ]; then
	if [ -d /run/systemd/system ]; then
		systemctl stop mi-agent.service mi-agent.socket >/dev/null 2>&1 || :
	fi
	systemctl --no-reload disable mi-agent.service mi-agent.socket >/dev/null 2>&1 || :
fi

# mi-agent %preun ($1: 0 erase, 1 upgrade), as rpm's %systemd_preun: on
# erase, disable and stop the units.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now mi-agent.service mi-agent.socket >/dev/null 2>&1 || :
fi

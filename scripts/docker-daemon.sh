#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, starting Debian's
# dockerd when none does. For machines without systemd (this project's CI);
# on a workstation or server the engine is normally a system service and
# this script only confirms it answers.
#
# The daemon started here has its own data and exec roots
# (NBMS_DOCKER_DATA_ROOT, default /var/lib/nbms-docker; NBMS_DOCKER_EXEC_ROOT,
# default /run/nbms-docker), listens on the standard socket
# /var/run/docker.sock (so the docker CLI, the Pulumi docker provider and
# the tests find it with no setting), logs to <data root>/dockerd.log, and
# runs detached from the caller: it outlives the script, make and CI steps
# and stops only with the machine. Idempotent.
set -euo pipefail
case "${1:-}" in
-h|--help) printf '%b\n' "Usage: scripts/docker-daemon.sh\nStart Debian's dockerd on /var/run/docker.sock unless a Docker engine already answers (idempotent)."; exit 0 ;;
"") ;;
*) echo "$(basename "$0"): unexpected argument: $1 (see --help)" >&2; exit 2 ;;
esac

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if docker info >/dev/null 2>&1; then
	echo "==> Docker engine answers ($(docker info --format '{{.ServerVersion}}, {{.Driver}}, data root {{.DockerRootDir}}'))"
	exit 0
fi
if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != unix:///var/run/docker.sock ]; then
	echo "docker-daemon: DOCKER_HOST=$DOCKER_HOST does not answer; fix it or unset it to use a local daemon" >&2
	exit 1
fi
command -v dockerd >/dev/null || { echo "docker-daemon: dockerd is missing: apt-get install docker.io" >&2; exit 1; }

data_root=${NBMS_DOCKER_DATA_ROOT:-/var/lib/nbms-docker}
exec_root=${NBMS_DOCKER_EXEC_ROOT:-/run/nbms-docker}
as_root mkdir -p "$data_root" "$exec_root"
log="$data_root/dockerd.log"
echo "==> starting dockerd (data root $data_root, log $log)"
# A stale socket or pid file from a machine that went down would make
# dockerd refuse to start.
as_root rm -f /var/run/docker.sock "$exec_root/dockerd.pid"
# setsid + nohup: a new session, so the daemon is not in the caller's
# process group and no terminal hang-up or CI step end reaches it.
as_root setsid nohup dockerd \
	--data-root "$data_root" --exec-root "$exec_root" \
	--pidfile "$exec_root/dockerd.pid" \
	-H unix:///var/run/docker.sock \
	>>"$log" 2>&1 </dev/null &
for _ in $(seq 1 60); do
	if docker info >/dev/null 2>&1; then
		echo "==> Docker engine ready ($(docker info --format '{{.ServerVersion}}, {{.Driver}}'))"
		exit 0
	fi
	sleep 0.5
done
echo "docker-daemon: dockerd did not answer within 30 s; its log:" >&2
tail -n 30 "$log" >&2
exit 1

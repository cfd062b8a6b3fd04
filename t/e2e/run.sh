#!/bin/sh
# End-to-end suite runner: `run.sh BINDIR [PYTEST ARGS...]` (e.g. -k kill9).
# Re-executes itself inside a private network namespace that has only
# loopback, so nothing the tests start (the gateway's DNS lookups and SMTP
# deliveries included) can reach beyond this machine; then runs pytest.
set -eu

if [ $# -lt 1 ]; then
	echo "usage: $0 BINDIR [PYTEST ARGS...]" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
bindir=$(cd "$1" && pwd)
shift

if [ "${MXF_E2E_NETNS:-}" != "1" ]; then
	export MXF_E2E_NETNS=1
	if [ "$(id -u)" -eq 0 ]; then
		# Real root keeps its identity (the suite checks the privilege drop).
		exec unshare --net --fork /bin/sh "$here/run.sh" "$bindir" "$@"
	else
		exec unshare --map-root-user --net --fork /bin/sh "$here/run.sh" "$bindir" "$@"
	fi
fi

ip link set lo up

export MXF_BIN="$bindir"
# Keep the source tree clean: no __pycache__, no .pytest_cache.
export PYTHONDONTWRITEBYTECODE=1
cd "$here"
rc=0
/usr/bin/python3 -m pytest -v -p no:cacheprovider -rfEs "$here" "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
	echo "run.sh: pytest collected no tests" >&2
	exit 1
fi
exit "$rc"

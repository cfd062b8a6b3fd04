#!/bin/sh
# The Debian package test: `run.sh` (ctest -R package). As real root only
# (it installs and purges the package on this machine): builds the package
# out of the source tree, runs lintian (no error, no warning), then
# t/e2e/test_package.py in a private network namespace with only loopback.
# Exit 77 (ctest: skipped) when not real root.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

if [ "$(id -u)" -ne 0 ] || [ "$(awk '{print $1 $2 $3}' /proc/self/uid_map)" != "004294967295" ]; then
	echo "package test skipped: it needs real root (dpkg -i and --purge on this machine)"
	exit 77
fi
for t in dpkg-buildpackage dh lintian pflogsumm systemd-analyze unshare; do
	if ! command -v "$t" >/dev/null; then
		echo "package test: $t is missing; run scripts/install-deps.sh --test" >&2
		exit 1
	fi
done

out=$(mktemp -d /tmp/mxf-pkgtest-XXXXXX)
trap 'rm -rf "$out"' EXIT INT TERM
t0=$(date +%s)
if ! sh "$src/scripts/build-deb.sh" "$out" >"$out/build.log" 2>&1; then
	tail -60 "$out/build.log"
	echo "package test: the package build failed" >&2
	exit 1
fi
echo "package built in $(($(date +%s) - t0)) s: $(cd "$out" && ls *.deb | tr '\n' ' ')"
# The release build (-O2, no -Werror) may warn where the -O0 test build
# does not: show it, do not fail on it.
if grep -q 'warning:' "$out/build.log"; then
	echo "package test: compiler warnings in the release build:"
	grep -A3 'warning:' "$out/build.log" | head -40
fi

# --fail-on error,warning: lintian's exit status is the verdict; the
# overrides in debian/ carry their reasons.
lintian --fail-on error,warning --display-info "$out"/mxferry_*.changes
echo "lintian: no error, no warning"

deb=$(ls "$out"/mxferry_*_*.deb | grep -v dbgsym)
MXF_PKG_DEB=$deb MXF_E2E_NETNS=1 PYTHONDONTWRITEBYTECODE=1 \
	unshare --net --fork /bin/sh -c 'ip link set lo up && cd "$1" &&
		/usr/bin/python3 -m pytest -v -p no:cacheprovider -rfEs test_package.py' \
	sh "$src/t/e2e"

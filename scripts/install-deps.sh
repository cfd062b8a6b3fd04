#!/bin/sh
# Installs every missing Debian package needed to build, run and test mxferry.
# Does nothing (and needs no root) when all are present.
set -eu

BUILD_PKGS="build-essential cmake pkg-config libssl-dev libuv1-dev libldns-dev \
libopendkim-dev libspf2-dev libsqlite3-dev libidn2-dev libinih-dev libcmocka-dev libgmime-3.0-dev \
libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev"
TEST_PKGS="python3 python3-pytest python3-aiosmtpd python3-dnspython nsd iproute2 \
util-linux openssl sqlite3 clang libclang-rt-14-dev strace python3-prometheus-client \
python3-dkim python3-nacl python3-authres opendkim-tools python3-spf python3-yaml nodejs \
chromium"
# The Debian package: build (dpkg-buildpackage, dh), check (lintian,
# systemd-analyze), install (adduser) and its log summary (pflogsumm).
PKG_PKGS="debhelper dpkg-dev lintian systemd adduser openssl pflogsumm"
# bench/forward (issue 14): Postfix as the peer, its smtp-source and
# smtp-sink as load generator and destination. Only when the bench runs (it
# calls this with --bench); never configured as the system's mailer.
BENCH_PKGS="postfix iproute2 util-linux"

want="$BUILD_PKGS"
case "${1:-}" in
	--test) want="$BUILD_PKGS $TEST_PKGS $PKG_PKGS" ;;
	--pkg) want="$BUILD_PKGS $PKG_PKGS" ;;
	--bench) want="$BUILD_PKGS $BENCH_PKGS" ;;
esac

missing=""
for p in $want; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
		"install ok installed") ;;
		*) missing="$missing $p" ;;
	esac
done

# The dashboard test (t/e2e/test_dashboard.py) drives chromium with
# playwright-core from npm, pinned in t/e2e/dashboard/package-lock.json and
# installed into t/e2e/dashboard/node_modules (gitignored). Here, not in the
# test: the e2e suite runs offline in its own network namespace.
dashboard_npm() {
	dir="$(cd "$(dirname "$0")/.." && pwd)/t/e2e/dashboard"
	want_v=$(sed -n 's/.*"playwright-core": *"\([^"]*\)".*/\1/p' "$dir/package.json")
	have_v=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
		"$dir/node_modules/playwright-core/package.json" 2>/dev/null | head -n 1)
	[ -n "$want_v" ] && [ "$want_v" = "$have_v" ] && return 0
	echo "install-deps: npm ci in $dir (playwright-core $want_v)" >&2
	(cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts)
}

# Debian's nodejs has npm in a package of its own; a nodejs from elsewhere
# (NodeSource) ships npm itself and conflicts with Debian's.
if [ "${1:-}" = "--test" ] && ! command -v npm >/dev/null 2>&1; then
	missing="$missing npm"
fi

if [ -z "$missing" ]; then
	[ "${1:-}" = "--test" ] && dashboard_npm
	exit 0
fi

echo "install-deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# nsd's package starts a system nsd on port 53 when a init system runs; we only
# want the binary, so keep services from starting during installation.
if [ "$(id -u)" -eq 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
case " $missing " in
*" postfix "*)
	# "No configuration": no main.cf, no system Postfix on :25.
	echo "postfix postfix/main_mailer_type select No configuration" |
		$SUDO debconf-set-selections ;;
esac
$SUDO apt-get install -y -q --no-install-recommends $missing
[ "${1:-}" = "--test" ] && dashboard_npm
exit 0

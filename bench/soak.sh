#!/bin/sh
# Crash soak, long form: `bench/soak.sh [BINDIR] [N]` (defaults: build/bin, 100000).
# Runs t/e2e/test_reliability_soak.py with N messages sent as fast as 4
# clients go while a chaos loop kill -9s a random daemon every 200-600 ms
# (and the whole gateway whenever a daemon would enter the master's restart
# backoff), then prints the figures: every message that got a 250 must
# arrive; duplicates are counted. Environment: MXF_SOAK_SENDERS (4),
# MXF_SOAK_RATE (0 = unlimited), MXF_SOAK_CHAOS_MS (200-600), MXF_SOAK_SEED,
# MXF_SOAK_VICTIMS (comma-separated daemons to kill; default all).
# Needs what `make test` needs (root or user namespaces, nsd, aiosmtpd).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bindir=${1:-$here/build/bin}
n=${2:-100000}
report=$(mktemp /tmp/mxf-soak-XXXXXX.json)
trap 'rm -f "$report"' EXIT
export MXF_SOAK_N="$n" MXF_SOAK_RATE="${MXF_SOAK_RATE:-0}" MXF_SOAK_REPORT="$report"
t0=$(date +%s)
rc=0
sh "$here/t/e2e/run.sh" "$bindir" -k test_crash_soak -q >"$report.log" 2>&1 || rc=$?
echo "soak: N=$n, wall time $(($(date +%s) - t0)) s, pytest exit $rc"
if [ -s "$report" ]; then
	/usr/bin/python3 -c 'import json,sys; [print(f"  {k}: {v}") for k, v in json.load(open(sys.argv[1])).items()]' "$report"
fi
if [ "$rc" -ne 0 ]; then
	tail -n 60 "$report.log"
fi
rm -f "$report.log"
exit "$rc"

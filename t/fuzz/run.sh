#!/bin/sh
# Fuzz suite runner (ctest test "fuzz"): `run.sh BUILDDIR`.
#   1. configures BUILDDIR as a clang build with -DMXF_FUZZ=ON (libFuzzer,
#      ASan, UBSan) unless it is one already, and builds every fuzz target;
#   2. replays every seed and regression input in t/fuzz/corpus/<target>/;
#   3. fuzzes each target for min(60 s, MXF_FUZZ_BUDGET / number of targets),
#      MXF_FUZZ_JOBS targets at a time. New inputs go to BUILDDIR/fuzz-work,
#      crashes to BUILDDIR/fuzz-artifacts (never into the source tree).
# MXF_FUZZ_BUDGET (default 240) is the fuzzing seconds summed over targets,
# so with 2 jobs the wall time of step 3 is about 2 minutes. MXF_FUZZ_BUDGET=0
# replays only. The long form: MXF_FUZZ_BUDGET=3600 (60 s cap per target
# still applies unless MXF_FUZZ_MAX is raised too).
set -eu

here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = "--one" ]; then
	# Internal: fuzz one target (run through xargs -P).
	bdir=$2 t=$3 secs=$4
	work="$bdir/fuzz-work/$t"
	mkdir -p "$work" "$bdir/fuzz-artifacts"
	log="$bdir/fuzz-work/$t.log"
	if "$bdir/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=4096 -print_final_stats=1 \
		-artifact_prefix="$bdir/fuzz-artifacts/$t-" \
		"$work" "$here/corpus/$t" >"$log" 2>&1; then
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
		echo "fuzz: $t: ${secs}s, ${execs:-?} runs, $cov, no crash"
		exit 0
	fi
	echo "fuzz: $t: FAILED; last lines of $log:" >&2
	tail -n 60 "$log" >&2
	for a in "$bdir/fuzz-artifacts/$t-"*; do
		[ -e "$a" ] || continue
		echo "fuzz: $t: input $a (reproduce: $bdir/fuzz/$t $a):" >&2
		od -A d -c "$a" | head -n 20 >&2
	done
	exit 1
fi

if [ $# -lt 1 ]; then
	echo "usage: $0 BUILDDIR" >&2
	exit 2
fi
bdir=$1
src=$(cd "$here/../.." && pwd)
budget=${MXF_FUZZ_BUDGET:-240}
cap=${MXF_FUZZ_MAX:-60}
jobs=${MXF_FUZZ_JOBS:-2}

if ! command -v clang >/dev/null 2>&1; then
	echo "fuzz: clang is missing: run scripts/install-deps.sh --test" >&2
	exit 1
fi
if ! grep -q '^MXF_FUZZ:BOOL=ON' "$bdir/CMakeCache.txt" 2>/dev/null; then
	# -O1: fast enough to fuzz, still precise reports; no NDEBUG (asserts stay).
	CC=clang cmake -S "$src" -B "$bdir" -DMXF_FUZZ=ON -DMXF_SANITIZE=OFF \
		-DCMAKE_BUILD_TYPE=Fuzz -DCMAKE_C_FLAGS="-O1 -g" >/dev/null
fi
t0=$(date +%s)
cmake --build "$bdir" --target fuzz_all -j "$(nproc)" >"$bdir/fuzz-build.log" 2>&1 || {
	tail -n 40 "$bdir/fuzz-build.log" >&2
	echo "fuzz: building the fuzz targets failed" >&2
	exit 1
}
echo "fuzz: targets built in $(($(date +%s) - t0))s"

targets=$(cd "$here" && ls fuzz_*.c | sed 's/\.c$//')
n=$(echo "$targets" | wc -l)

# Replay: every stored input must pass (seeds and fixed crashes alike).
fail=0
for t in $targets; do
	if [ ! -d "$here/corpus/$t" ] || [ -z "$(ls "$here/corpus/$t")" ]; then
		echo "fuzz: $t has no seed corpus in t/fuzz/corpus/$t" >&2
		fail=1
		continue
	fi
	cnt=$(ls "$here/corpus/$t" | wc -l)
	if "$bdir/fuzz/$t" "$here/corpus/$t"/* >"$bdir/fuzz-replay-$t.log" 2>&1; then
		echo "fuzz: $t: replayed $cnt corpus inputs"
	else
		echo "fuzz: $t: corpus replay FAILED:" >&2
		tail -n 40 "$bdir/fuzz-replay-$t.log" >&2
		fail=1
	fi
done
[ "$fail" -eq 0 ] || exit 1

secs=$((budget / n))
[ "$secs" -gt "$cap" ] && secs=$cap
if [ "$secs" -le 0 ]; then
	echo "fuzz: replay only (MXF_FUZZ_BUDGET=$budget)"
	exit 0
fi
echo "fuzz: $n targets, ${secs}s each, $jobs at a time"
rm -rf "$bdir/fuzz-work" "$bdir/fuzz-artifacts"
echo "$targets" | xargs -P "$jobs" -I{} /bin/sh "$0" --one "$bdir" {} "$secs"

#!/bin/sh
# Rule-set load benchmark (issue 4: 100,000 rules load in under a second).
#   bench/rules_load.sh [NRULES]
# Builds an optimised, unsanitised mxcommon in build-bench/ and prints the
# figures; exits 1 when the load takes a second or more.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
b="$here/build-bench"
cmake -S "$here" -B "$b" -DCMAKE_BUILD_TYPE=Release -DMXF_SANITIZE=OFF >/dev/null
cmake --build "$b" --target mxcommon -j2 >/dev/null
cc -O2 -std=c17 -D_GNU_SOURCE -I"$here/common" "$here/bench/rules_load.c" "$b/common/libmxcommon.a" \
	$(pkg-config --cflags --libs sqlite3 libidn2 libuv inih libcrypto ldns) \
	-o "$b/rules_load"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$b/rules_load" "$d" "${1:-100000}"

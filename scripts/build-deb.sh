#!/bin/sh
# Builds the Debian package out of the source tree: `build-deb.sh OUTDIR`.
# The checkout's files (tracked, plus new ones git does not ignore) are
# copied to a temporary directory where dpkg-buildpackage runs, so nothing
# of the build lands in the checkout; the .deb, .changes and .buildinfo
# files go to OUTDIR.
set -eu

out=${1:?usage: build-deb.sh OUTDIR}
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
tmp=$(mktemp -d /tmp/mxf-deb-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
tree="$tmp/mxferry-$version"
mkdir "$tree"

if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git -C "$src" ls-files -z --cached --others --exclude-standard |
		(cd "$src" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
		tar -C "$src" --null -T - -cf - | tar -C "$tree" -xf -
else
	(cd "$src" && tar --exclude='./build*' --exclude=./run -cf - .) | (cd "$tree" && tar -xf -)
fi

export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}"
(cd "$tree" && dpkg-buildpackage -us -uc -b)
for f in "$tmp"/*.deb "$tmp"/*.changes "$tmp"/*.buildinfo; do
	[ -e "$f" ] && cp "$f" "$out/"
done
ls -1 "$out"/mxferry*_"$version"_*.deb

#!/bin/sh
# Installing rrcache: `cmake --install` into a scratch root puts every file in place and keeps
# an existing configuration; the .deb built by CPack declares its runtime libraries, unpacks
# to a tree whose rrcache runs --check-config on the shipped file; the systemd unit verifies.
# Nothing is installed on the machine itself.
#
# Usage: tests/install.sh SOURCE_DIR BUILD_DIR   (a build of its own goes in BUILD_DIR/pkg)
set -eu
src=$(cd "$1" && pwd)
pkg="$2/pkg"
work=$(mktemp -d /tmp/rrc-install-XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
fail() {
	echo "install: FAILED: $*"
	exit 1
}

# A build with the prefix of a package, the daemon only (the unit names /usr/sbin/rrcache).
cmake -S "$src" -B "$pkg" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	-DRRC_TESTS=OFF >/dev/null
cmake --build "$pkg" -j "$(nproc)" --target rrcache >/dev/null

# 1. cmake --install into a scratch root.
root="$work/root"
DESTDIR="$root" cmake --install "$pkg" >"$work/install.log"
for f in usr/sbin/rrcache etc/rrcache/rrcache.yaml usr/lib/systemd/system/rrcache.service \
	usr/share/man/man8/rrcache.8 usr/share/man/man5/rrcache.yaml.5 \
	usr/share/doc/rrcache/examples/rrcache.yaml usr/share/doc/rrcache/examples/sidecar.yaml; do
	[ -e "$root/$f" ] || fail "cmake --install did not install /$f"
done
cmp -s "$root/etc/rrcache/rrcache.yaml" "$src/config/rrcache.yaml" || fail "config differs"
grep -q '^ExecStart=/usr/sbin/rrcache -c /etc/rrcache/rrcache.yaml' \
	"$root/usr/lib/systemd/system/rrcache.service" || fail "unit's ExecStart"
# An operator's configuration survives a second install.
echo "# changed by the operator" >>"$root/etc/rrcache/rrcache.yaml"
DESTDIR="$root" cmake --install "$pkg" >"$work/install2.log"
grep -q "changed by the operator" "$root/etc/rrcache/rrcache.yaml" ||
	fail "a second install overwrote /etc/rrcache/rrcache.yaml"
grep -q "Keeping: .*rrcache.yaml" "$work/install2.log" || fail "the kept file is not reported"
"$root/usr/sbin/rrcache" -c "$root/etc/rrcache/rrcache.yaml" --check-config >/dev/null ||
	fail "--check-config on the installed file"

# 2. The .deb.
(cd "$pkg" && cpack -G DEB >"$work/cpack.log" 2>&1) || {
	cat "$work/cpack.log"
	fail "cpack"
}
deb=$(ls "$pkg"/rrcache_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
echo "install: $(basename "$deb") Depends: $depends"
for lib in libuv1 libldns3 libyaml-0-2 libhiredis0.14 libssl3 libmicrohttpd12 libfstrm0 libc6; do
	echo "$depends" | grep -q "$lib" || fail "Depends lacks $lib"
done
# Every dependency is satisfiable here (what the machine has installed).
echo "$depends" | tr ',' '\n' | while read -r dep; do
	name=$(echo "$dep" | sed 's/[ (].*//')
	dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "ok installed" ||
		fail "dependency $name is not installed"
done
dpkg-deb -c "$deb" >"$work/contents"
grep -q './etc/rrcache/rrcache.yaml' "$work/contents" || fail "the .deb has no config"
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/rrcache/rrcache.yaml "$work/control/conffiles" || fail "config is no conffile"
droot="$work/deb"
dpkg-deb -x "$deb" "$droot"
ldd "$droot/usr/sbin/rrcache" | grep -q "not found" && fail "a library is missing"
"$droot/usr/sbin/rrcache" -c "$droot/etc/rrcache/rrcache.yaml" --check-config ||
	fail "--check-config from the .deb"
"$droot/usr/sbin/rrcache" --version | head -1

# 3. The unit as systemd reads it. Its ExecStart names /usr/sbin/rrcache, which is not on this
# machine: a copy names the unpacked binary instead (the man pages are checked on their own by
# tests/man_pages.py, hence --man=no). Then its exposure score.
if command -v systemd-analyze >/dev/null 2>&1; then
	unit="$work/rrcache.service"
	sed "s|/usr/sbin/rrcache|$droot/usr/sbin/rrcache|g" \
		"$droot/usr/lib/systemd/system/rrcache.service" >"$unit"
	systemd-analyze verify --man=no "$unit" >"$work/verify.log" 2>&1 || {
		cat "$work/verify.log"
		fail "systemd-analyze verify"
	}
	if [ -s "$work/verify.log" ]; then
		cat "$work/verify.log"
		fail "systemd-analyze verify printed warnings"
	fi
	# --threshold is in tenths: 25 is the 2.5 of the score printed.
	systemd-analyze security --offline=true --threshold=25 "$unit" >"$work/security.log" 2>&1 || {
		cat "$work/security.log"
		fail "systemd-analyze security above 2.5"
	}
	tail -1 "$work/security.log"
else
	echo "install: systemd-analyze not found, the unit is not verified"
fi
echo "install: all checks passed"

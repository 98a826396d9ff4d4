#!/bin/sh
# Runs the benchmark (see bench/README.md): installs the peers, builds rrcache, runs bench/run.py.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh deps-test
pkgs=""
for p in dnsperf dnsdist unbound dnsmasq-base nghttp2-client; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || pkgs="$pkgs $p"
done
if [ -n "$pkgs" ]; then
	apt-get update -q
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs
fi
# The packages enable system services on port 53; the benchmark starts its own instances.
for s in dnsdist unbound; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet "$s" 2>/dev/null; then
		systemctl disable --now "$s" || true
	fi
done
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"
exec /usr/bin/python3 bench/run.py "$@"

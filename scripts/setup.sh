#!/bin/sh
# rrcache set-up for a fresh Debian 12 machine, run as root from the source tree.
#
#   scripts/setup.sh run    install the build packages, build the daemon, run it on
#                           config/rrcache.yaml; no service of the machine is touched
#   scripts/setup.sh test   install the build and test packages, run the whole suite twice:
#                           the plain build with -Werror, then RRC_SANITIZE=address,undefined;
#                           then the container images and compose set-ups (docker/test.sh,
#                           with podman); stops (and disables) the services the test
#                           packages start
#   scripts/setup.sh deps-run | deps-test   only install the packages
set -eu

cd "$(dirname "$0")/.."

BUILD_PKGS="build-essential cmake pkg-config libuv1-dev libldns-dev libyaml-dev libhiredis-dev libssl-dev libmicrohttpd-dev libfstrm-dev libgnutls28-dev libnghttp2-dev"
TEST_PKGS="libcmocka-dev curl knot knot-dnsutils ldnsutils unbound python3 python3-pytest python3-dnspython python3-cryptography python3-yaml redis-server redis-sentinel prometheus chromium dnstap-ldns systemd groff-base man-db dpkg-dev"

install_pkgs() {
	missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
			missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "setup: installing$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends $missing
	fi
}

# The test path only: the Debian packages of knot, unbound, redis-server and prometheus enable system
# services (a knotd on port 53 among them); the tests start their own on random ports and use
# promtool alone, so those services are stopped and disabled, each named as it goes.
quiet_test_services() {
	command -v systemctl >/dev/null 2>&1 || return 0
	for svc in knot unbound redis-server prometheus prometheus-node-exporter; do
		if systemctl is-enabled --quiet "$svc" 2>/dev/null; then
			echo "setup: stopping and disabling $svc (started by a test package; the tests run their own)"
			systemctl disable --now "$svc" || true
		fi
	done
}

build() { # build DIR [cmake args...]
	dir=$1
	shift
	cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
	cmake --build "$dir" -j "$(nproc)"
}

failed=""

suite() { # suite DIR LABEL: runs both parts; a failure is remembered, not fatal, so that a
	# failure in one build never hides the other's results
	echo "=== $2: unit tests and corpus replay (ctest)"
	(cd "$1" && ctest --output-on-failure) || failed="$failed\n  $2: ctest"
	echo "=== $2: end-to-end tests (pytest)"
	RRCACHE_BIN="$PWD/$1/src/rrcache" /usr/bin/python3 -m pytest -q -rf -p no:cacheprovider \
		tests/e2e || failed="$failed\n  $2: end-to-end tests"
}

case "${1:-}" in
deps-run)
	install_pkgs $BUILD_PKGS
	;;
deps-test)
	install_pkgs $BUILD_PKGS $TEST_PKGS
	quiet_test_services
	;;
run)
	install_pkgs $BUILD_PKGS
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRRC_TESTS=OFF >/dev/null
	cmake --build build -j "$(nproc)" --target rrcache
	exec build/src/rrcache -c config/rrcache.yaml
	;;
test)
	install_pkgs $BUILD_PKGS $TEST_PKGS
	quiet_test_services
	build build -DRRC_WERROR=ON -DRRC_TESTS=ON
	suite build "plain build (-Werror)"
	build build-san -DRRC_WERROR=ON -DRRC_TESTS=ON -DRRC_SANITIZE=address,undefined
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		suite build-san "sanitizer build (address,undefined)"
	# The container image and compose set-ups, once (docker/test.sh installs podman and the
	# rest; exit 77 is a skip, with the reason printed).
	echo "=== containers (docker/test.sh)"
	crc=0
	sh docker/test.sh || crc=$?
	if [ "$crc" = 77 ]; then
		echo "=== containers: skipped (reason above)"
	elif [ "$crc" != 0 ]; then
		failed="$failed\n  containers"
	fi
	if [ -n "$failed" ]; then
		printf "=== FAILED:%b\n" "$failed"
		exit 1
	fi
	echo "=== all suites passed"
	;;
*)
	sed -n '2,11p' "$0"
	exit 2
	;;
esac

#!/bin/sh
# The container image and the sidecar fleet, for real: builds the images with podman (the
# base made with mmdebstrap from Debian's packages, no registry needed), starts
# docker/compose.sidecar.yaml with podman-compose, asks rrcache-a through its published port,
# checks that rrcache-b answers the same name from Redis, that health turns healthy, that
# rrcache runs as its own user with one capability, that the app beside rrcache-a resolves
# through it, that a reload and a stop are clean; then removes every container, network and
# image it made.
#
#   sh docker/test.sh          (as root; installs podman, runc, podman-compose, mmdebstrap)
#
# Exit 0: passed; 1: failed; 77: skipped, with the reason (not root, or no container engine
# can run on this machine). The host's podman configuration is not touched: a project file
# is given through CONTAINERS_CONF.
set -eu
cd "$(dirname "$0")/.."
say() { echo "containers: $*"; }
skip() {
	say "SKIPPED: $*"
	exit 77
}
fail() {
	say "FAILED: $*"
	exit 1
}

[ "$(id -u)" = 0 ] || skip "needs root (podman, mmdebstrap)"
pkgs="podman runc podman-compose mmdebstrap netavark aardvark-dns ldnsutils"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	say "installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	{ apt-get update -q && apt-get install -y -q --no-install-recommends $missing; } \
		>/tmp/rrc-containers-apt.log 2>&1 || skip "cannot install$missing (see /tmp/rrc-containers-apt.log)"
fi

run_id="rrctest$$"
work=$(mktemp -d /tmp/rrc-containers-XXXXXX)
export CONTAINERS_CONF="$work/containers.conf"
# What these hosts need: the container's limits within the host's hard ones (podman's own
# defaults are above them, and raising a hard limit is not allowed here), runc, cgroupfs.
# (4096 processes, or the hard limit when lower: the host's own value was refused by runc here.)
nproc=$(awk '/^Max processes/ {print ($4 == "unlimited" || $4 > 4096) ? 4096 : $4}' /proc/self/limits)
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"
CONF
base="localhost/$run_id-base:bookworm"
image="localhost/$run_id-rrcache:test"
demo="localhost/$run_id-demo:test"
prom="localhost/$run_id-prometheus:test"
compose="podman-compose -p $run_id -f docker/compose.sidecar.yaml"
compose_m="podman-compose -p ${run_id}m -f docker/compose.monitoring.yaml"

cleanup() {
	set +e
	$compose down -t 5 >/dev/null 2>&1
	$compose_m down -t 5 >/dev/null 2>&1
	for c in $(podman ps -a --format '{{.Names}}' | grep "^${run_id}m\?_"); do
		podman rm -f "$c" >/dev/null 2>&1
	done
	for n in $(podman network ls --format '{{.Name}}' | grep "^${run_id}"); do
		podman network rm -f "$n" >/dev/null 2>&1
	done
	podman rmi -f "$image" "$demo" "$prom" "$base" >/dev/null 2>&1
	podman image prune -f >/dev/null 2>&1 # the build stages this run left
	left=$(podman ps -a --format '{{.Names}}' | grep -c "^${run_id}m\?_")
	[ "$left" = 0 ] || say "warning: $left container(s) left"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

podman info >/dev/null 2>&1 || skip "podman cannot run here: $(podman info 2>&1 | tail -1)"

# The base image: a minimal bookworm from Debian's packages. The tarball is kept between runs
# (in /var/tmp, at most a week old) so a second run does not download it again.
tarball=/var/tmp/rrcache-test-base-bookworm.tar
if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +7)" ]; then
	say "making the base image with mmdebstrap"
	mmdebstrap --variant=minbase --format=tar bookworm "$tarball.tmp" http://deb.debian.org/debian \
		>"$work/mmdebstrap.log" 2>&1 || {
		tail -5 "$work/mmdebstrap.log"
		fail "mmdebstrap"
	}
	mv "$tarball.tmp" "$tarball"
fi
podman import -q "$tarball" "$base" >/dev/null || fail "podman import"
podman run --rm "$base" true 2>"$work/run.log" || skip "a container cannot start here: $(tail -1 "$work/run.log")"

say "building the images"
t0=$(date +%s)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
podman build -q --format docker --build-arg BASE="$base" --build-arg RRC_COMMIT="$commit" \
	-f docker/Dockerfile -t "$image" . >"$work/build.log" 2>&1 || {
	tail -20 "$work/build.log"
	fail "podman build docker/Dockerfile"
}
podman build -q --format docker --build-arg BASE="$base" -f docker/demo/Dockerfile \
	-t "$demo" . >"$work/build-demo.log" 2>&1 || {
	tail -20 "$work/build-demo.log"
	fail "podman build docker/demo/Dockerfile"
}
podman build -q --format docker --build-arg BASE="$base" -f docker/monitoring/Dockerfile \
	-t "$prom" . >"$work/build-prom.log" 2>&1 || {
	tail -20 "$work/build-prom.log"
	fail "podman build docker/monitoring/Dockerfile"
}
say "images built in $(($(date +%s) - t0)) s; rrcache image $(podman image inspect --format '{{.Size}}' "$image") bytes"
hc=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$image")
echo "$hc" | grep -q healthcheck || fail "the image has no HEALTHCHECK: $hc"
[ "$(podman image inspect --format '{{.Config.User}}' "$image")" = "rrcache:rrcache" ] ||
	fail "the image does not run as rrcache"
# (podman says on stderr that it cannot schedule the health checks without systemd as init;
# this script runs them itself with `podman healthcheck run`.)
version=$(podman run --rm "$image" --version 2>>"$work/run.log" | head -1)
echo "$version" | grep -q "commit $commit)" || fail "--version in the image: $version"

# Uncommon host ports, free now.
ports=$(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
set -- $ports
export RRC_PORT_A=$1 RRC_PORT_B=$2 RRC_METRICS_A=$3 RRC_IMAGE="$image" RRC_DEMO_IMAGE="$demo" RRC_BASE="$base"
export RRC_PROMETHEUS_IMAGE="$prom"
say "starting the fleet (rrcache-a on 127.0.0.1:$RRC_PORT_A, rrcache-b on 127.0.0.1:$RRC_PORT_B)"
$compose up -d --no-build >"$work/up.log" 2>&1 || {
	tail -20 "$work/up.log"
	fail "podman-compose up"
}
a="${run_id}_rrcache-a_1"
b="${run_id}_rrcache-b_1"

ask() { # ask PORT NAME: the first answer's address, or nothing
	drill -p "$1" @127.0.0.1 "$2" A 2>/dev/null | awk '/^;; ANSWER SECTION/{getline; print $5; exit}'
}
metrics() { # metrics CONTAINER: its /metrics, read from inside (no HTTP client in the image)
	podman exec "$1" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9153 &&
		printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3'
}
value() { # value CONTAINER METRIC_LINE_PREFIX: the sum of the matching samples
	metrics "$1" | awk -v p="$2" 'index($0, p) == 1 {s += $NF} END {print s + 0}'
}

answer=""
for _ in $(seq 1 60); do
	answer=$(ask "$RRC_PORT_A" www.demo.test)
	[ -n "$answer" ] && break
	sleep 0.5
done
[ "$answer" = 192.0.2.80 ] || {
	podman logs "$a" 2>&1 | tail -20
	fail "rrcache-a did not answer www.demo.test through the published port (got '$answer')"
}
say "rrcache-a answers through its published port: www.demo.test A $answer"
# rrcache-b has never seen the name: its answer comes from Redis, written by rrcache-a.
for _ in $(seq 1 20); do
	[ "$(value "$b" 'rrcache_redis_up')" -ge 1 ] && break
	sleep 0.5
done
hits0=$(value "$b" 'rrcache_redis_requests_total{result="hit"}')
answer_b=$(ask "$RRC_PORT_B" www.demo.test)
hits1=$(value "$b" 'rrcache_redis_requests_total{result="hit"}')
up_b=$(value "$b" 'rrcache_upstream_queries_total')
[ "$answer_b" = 192.0.2.80 ] || fail "rrcache-b answered '$answer_b'"
[ "$hits1" -gt "$hits0" ] || fail "rrcache-b's answer did not come from Redis (hits $hits0 -> $hits1)"
[ "$up_b" = 0 ] || fail "rrcache-b asked its upstream ($up_b queries)"
say "rrcache-b answers from Redis: redis hits $hits0 -> $hits1, upstream queries $up_b"
# The statistics endpoint through the published port (allowed: the host reaches it through
# the compose network's gateway).
/usr/bin/python3 -c "
import urllib.request, sys
body = urllib.request.urlopen('http://127.0.0.1:$RRC_METRICS_A/metrics', timeout=5).read()
sys.exit(0 if b'rrcache_queries_total' in body else 1)" || fail "/metrics through the published port"

# Health: podman runs the image's HEALTHCHECK.
status=""
for _ in $(seq 1 20); do
	podman healthcheck run "$a" >/dev/null 2>&1 && podman healthcheck run "$b" >/dev/null 2>&1 && {
		status=healthy
		break
	}
	sleep 0.5
done
[ "$status" = healthy ] || fail "podman healthcheck run: not healthy"
st=$(podman inspect --format '{{.State.Health.Status}}' "$a" 2>/dev/null || podman inspect --format '{{.State.Healthcheck.Status}}' "$a")
[ "$st" = healthy ] || fail "health status '$st'"
say "health: $st"

# Its own user and one capability.
ids=$(podman exec "$a" sh -c 'grep -E "^(Uid|Gid|CapEff)" /proc/1/status' | tr -s '\t ' ' ')
echo "$ids" | grep -q "^Uid: 953 953 953 953" || fail "not running as uid 953: $ids"
echo "$ids" | grep -q "^CapEff: 0000000000000400" || fail "capabilities beyond NET_BIND_SERVICE: $ids"
say "runs as uid 953 with CAP_NET_BIND_SERVICE only"

# The app beside rrcache-a resolves through it.
for _ in $(seq 1 60); do
	podman logs "${run_id}_app_1" 2>&1 | grep -q 192.0.2.80 && break
	sleep 0.5
done
podman logs "${run_id}_app_1" 2>&1 | grep -q 192.0.2.80 || {
	podman logs "${run_id}_app_1" 2>&1 | tail -5
	podman inspect --format '{{.HostConfig.NetworkMode}}' "${run_id}_app_1"
	fail "the app did not resolve through rrcache-a"
}
say "the app resolves through rrcache-a: $(podman logs "${run_id}_app_1" 2>&1 | tail -1)"

# A reload (host names resolved again) and a clean stop.
podman kill -s HUP "$a" >/dev/null
for _ in $(seq 1 20); do
	podman logs "$a" 2>&1 | grep -q "configuration reloaded" && break
	sleep 0.25
done
podman logs "$a" 2>&1 | grep -q "configuration reloaded" || fail "no reload on SIGHUP"
podman stop -t 10 "$b" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$b")
[ "$code" = 0 ] || fail "rrcache-b exited $code on SIGTERM"
podman logs "$b" 2>&1 | grep -q "totals: queries" || fail "rrcache-b did not log its totals"
say "reload and stop: clean"
$compose down -t 5 >/dev/null 2>&1

# The monitoring set-up: Prometheus scrapes rrcache and has its alert rules loaded. (No DNS
# query here: this rrcache forwards to the machine's own resolvers.)
ports=$(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
set -- $ports
export RRC_PORT=$1 RRC_PROMETHEUS_PORT=$2
say "starting the monitoring set-up (Prometheus on 127.0.0.1:$RRC_PROMETHEUS_PORT)"
$compose_m up -d --no-build >"$work/up-m.log" 2>&1 || {
	tail -20 "$work/up-m.log"
	fail "podman-compose up (monitoring)"
}
scraped=""
for _ in $(seq 1 60); do
	scraped=$(/usr/bin/python3 -c "
import json, urllib.request
q = 'http://127.0.0.1:$RRC_PROMETHEUS_PORT/api/v1/query?query=rrcache_workers'
try:
    r = json.load(urllib.request.urlopen(q, timeout=3))['data']['result']
    print(r[0]['value'][1] if r else '')
except Exception:
    print('')")
	[ -n "$scraped" ] && break
	sleep 1
done
[ -n "$scraped" ] || fail "Prometheus did not scrape rrcache"
rules=$(/usr/bin/python3 -c "
import json, urllib.request
r = json.load(urllib.request.urlopen('http://127.0.0.1:$RRC_PROMETHEUS_PORT/api/v1/rules', timeout=5))
rules = [x for g in r['data']['groups'] for x in g['rules']]
bad = [x['name'] for x in rules if x.get('health') not in ('ok', 'unknown')]
print(len(rules), 'rules' + (' bad: ' + ','.join(bad) if bad else ''))")
[ "$rules" = "9 rules" ] || fail "alert rules in Prometheus: $rules"
say "Prometheus scrapes rrcache (rrcache_workers $scraped) with $rules loaded"
say "all checks passed"

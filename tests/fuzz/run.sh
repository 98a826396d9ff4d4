#!/bin/sh
# Runs every libFuzzer target under ASan/UBSan for SECONDS each (default 600), starting from
# its committed corpus; new inputs go to build-fuzz/corpus_<target>, crashes to
# build-fuzz/crash-*. Worth copying into the committed corpus: the inputs that found a bug.
#
#   sh tests/fuzz/run.sh [SECONDS] [TARGET...]   targets: wire l2 reply config form tcp policy
#                                                  local cachefile doh cluster
set -eu
cd "$(dirname "$0")/../.."
seconds=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-wire l2 reply config form tcp policy local cachefile doh cluster}
CC=clang cmake -S . -B build-fuzz -DRRC_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
for t in $targets; do
	cmake --build build-fuzz -j "$(nproc)" --target "fuzz_$t" >/dev/null
done
status=0
for t in $targets; do
	seeds=tests/fuzz/corpus_$t
	[ "$t" = wire ] && seeds=tests/fuzz/corpus
	mkdir -p "build-fuzz/corpus_$t"
	echo "=== fuzz_$t for $seconds s"
	if ! (cd build-fuzz && "./tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 "corpus_$t" "../$seeds"); then
		echo "=== fuzz_$t FOUND A PROBLEM (see build-fuzz/crash-*)"
		status=1
	fi
done
exit $status

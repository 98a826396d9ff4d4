#!/usr/bin/python3
"""A/B: rrcache's CPU per answered query for two (or more) builds, in interleaved rounds on the
same Knot upstream, pinned like bench/run.py (server on CPU 1, dnsperf on CPU 0).

Usage: bench/ab.py BINARY[,BINARY...] hit|miss [--qps N] [--rounds N]

hit: the 1,000 hot names for 6 s; miss: unique names, one pass (150,000 at full speed, 60,000 at
a fixed rate). Prints each round's figure and the median per binary. Used for what the upstream
batching buys (bench/README.md): a build whose sendmmsg/recvmmsg take one message at a time
against the normal one.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
import run as B  # noqa: E402
from helpers import Knot  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries")
    ap.add_argument("mode", choices=("hit", "miss"))
    ap.add_argument("--qps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bins = args.binaries.split(",")
    work = tempfile.mkdtemp(prefix="rrc-ab-")
    hot = os.path.join(work, "hot.txt")
    B.write_names(hot, [f"b{i}.example.test." for i in range(B.HOT_NAMES)])
    res = {b: [] for b in bins}
    knot = Knot(extra_zone=B.zone_extra())
    try:
        for _ in range(args.rounds):
            for b in bins:
                B.RRCACHE = b
                s = B.Server("rrcache", knot.port, work)
                try:
                    B.dnsperf(s.port, hot, once=True)
                    if args.mode == "miss":
                        names = os.path.join(work, "miss.txt")
                        n = 60000 if args.qps else 150000
                        B.write_names(names, [f"a{time.time_ns()}-{i}.u.example.test."
                                              for i in range(n)])
                        r = B.measure(s, lambda: B.dnsperf(s.port, names, once=True,
                                                           qps=args.qps))
                    else:
                        r = B.measure(s, lambda: B.dnsperf(s.port, hot, seconds=6,
                                                           qps=args.qps))
                finally:
                    s.stop()
                res[b].append(r["cpu_us_per_q"])
    finally:
        knot.stop()
    for b in bins:
        print(f"{b} {args.mode} qps={args.qps or 'full'}: " +
              " ".join(f"{x:.2f}" for x in res[b]) +
              f" us/q, median {statistics.median(res[b]):.2f}")


if __name__ == "__main__":
    main()

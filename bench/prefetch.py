#!/usr/bin/python3
"""What prefetch (cache.prefetch) does for a popular set whose TTLs expire during the run: the
share of client queries that wait on an upstream (cache misses), and the extra upstream
queries it costs. The same run with prefetch on and off: 200 names, each answered with a TTL
of 10 s by a test upstream, asked at a steady 400 queries a second (each name about twice a
second) for 60 s, so every name expires about 6 times. Writes its section of bench/RESULTS.md.

Usage: bench/prefetch.py [--seconds N]
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
import run as B  # noqa: E402
from helpers import FaultUpstream, free_port  # noqa: E402
import dns.message  # noqa: E402
import dns.rrset  # noqa: E402
from instructions import write_section  # noqa: E402

TTL = 10


def answer(q, transport):
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, TTL, "IN", "A", "192.0.2.9"))
    return r


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for name, labels, value in re.findall(r"^(rrcache_\w+)(\{[^}]*\})? (\S+)$", text, re.M):
        out[name + (labels or "")] = float(value)
    return out


def one(up_port, names, seconds, prefetch, work):
    port, mport = free_port(), free_port()
    conf = os.path.join(work, f"p{prefetch}.yaml")
    with open(conf, "w") as f:
        f.write(f"cache:\n  prefetch: {'true' if prefetch else 'false'}\n")
    args = B.rrcache_args(port, up_port)
    args[args.index("--metrics") + 1] = f"127.0.0.1:{mport}"
    p = subprocess.Popen(args + ["-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        B.wait_port(port, p)
        before = metrics(mport)
        res = B.dnsperf(port, names, seconds=seconds, qps=400, outstanding=50)
        time.sleep(0.5)
        after = metrics(mport)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)

    def d(k):
        return after.get(k, 0) - before.get(k, 0)
    return {"queries": res["completed"],
            "misses": d('rrcache_cache_requests_total{result="miss"}'),
            "upstream": sum(v - before.get(k, 0) for k, v in after.items()
                            if k.startswith("rrcache_upstream_queries_total")),
            "prefetches": d("rrcache_prefetches_total")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rrc-prefetch-")
    names = os.path.join(work, "names.txt")
    B.write_names(names, [f"p{i}.prefetch.test." for i in range(200)])
    up = FaultUpstream(answer)
    try:
        off = one(up.port, names, args.seconds, False, work)
        on = one(up.port, names, args.seconds, True, work)
    finally:
        up.stop()
    rows = []
    for label, r in (("off", off), ("on", on)):
        later = r["misses"] - 200  # each name's first query always waits
        share = 100 * later / max(r["queries"] - 200, 1)
        rows.append(f"| {label} | {r['queries']:.0f} | {r['misses']:.0f} | {later:.0f} "
                    f"({share:.2f} %) | {r['upstream']:.0f} | {r['prefetches']:.0f} |")
        print(rows[-1], flush=True)
    extra = 100 * (on["upstream"] - off["upstream"]) / max(off["upstream"], 1)
    head = "## Prefetch (bench/prefetch.py)"
    write_section(head, f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; 200 names with a TTL "
                  f"of {TTL} s, 400 queries a second for {args.seconds} s, 1 worker. "
                  f"\"Waited\": client queries the cache could not answer; \"later\": "
                  f"those after each name's first.\n\n"
                  "| prefetch | client queries | waited | waited later (share of the later "
                  "queries) | upstream queries | prefetches |\n|---|---|---|---|---|---|\n" +
                  "\n".join(rows) +
                  f"\n\nUpstream queries with prefetch: {extra:+.1f} % against without (a "
                  f"refresh comes a tenth of a TTL early: +11 % in a long run).\n")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Instructions per query of rrcache, from callgrind (repeatable, unlike time on a shared
machine): for 1 and 2 workers, per cache hit and per miss.

Each figure is a difference of whole-process runs under valgrind, so start-up and shutdown
cancel out: (run with warm-up + N queries) - (run with warm-up only), divided by N.
With --redis, also per L2 hit (cold L1, the answer in Redis), with a fleet key_secret (sealed
values: no second ldns parse) and without one.
With --policy, what a blocklist of a million names costs: instructions per hit with and
without it (the names asked are not on it: the check every query pays), per blocked query,
and, natively, the list's load time and the resident memory it adds; and what the rate
limit's check adds to a hit.
With --dynblock, what the dynamic blocks cost: per hit and per miss with both rates watched
(none reached), and per query of a blocked prefix (answered REFUSED).
With --routing, what pools and local data cost: per hit and per miss with 10 pools of 50
domains and 1,100 local names against none, per local answer and per private reverse answer.
With --dot, per miss over UDP and over DNS over TLS (unbound as the TLS server in front of
the same knot), and the TLS handshakes those misses took.
With --cluster, per L2 hit (sealed) with one Redis and with a Redis Cluster of 3 masters (each
with a replica): what the slot routing adds.
Usage: bench/instructions.py [--hits N] [--misses N] [--redis] [--policy] [--dynblock]
                             [--routing] [--dot] [--cluster]
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
import run as B  # noqa: E402
from helpers import Knot, Redis, RedisCluster, UnboundTls, free_port, make_certs  # noqa: E402


def one_run(knot_port, workers, work, warm, extra, more=(), upstream=None, scrape=None):
    port = free_port()
    out = os.path.join(work, f"cg.{time.time_ns()}")
    args = B.rrcache_args(port, knot_port, workers=workers, cache_size="64MiB")
    if upstream:
        args[args.index("--upstream") + 1] = upstream
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] +
                            args + list(more),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    B.wait_port(port, proc, deadline=60)
    B.dnsperf(port, warm, once=True, outstanding=20)
    res = B.dnsperf(port, extra, once=True, outstanding=20) if extra else {"completed": 0}
    if scrape is not None:
        import urllib.request
        url = "http://" + args[args.index("--metrics") + 1] + "/metrics"
        scrape.append(urllib.request.urlopen(url, timeout=30).read().decode())
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    m = re.search(r"Collected : (\d+)", err)
    one_run.last_file = out
    return int(m.group(1)), res["completed"]


def inclusive(cgfile, functions):
    """Inclusive instruction counts of the named functions in a callgrind output."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", cgfile],
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s.*:(\w+)\s", line + " ")
        if m and m.group(2) in functions and m.group(2) not in found:
            found[m.group(2)] = int(m.group(1).replace(",", ""))
    return found


def l2_hits(knot_port, work, warm, n, cluster=False):
    """Instructions per L2 hit, sealed and not: instance A fills Redis with n names (natively),
    then B answers them under callgrind with a cold L1. With cluster: sealed only, one Redis
    against a cluster of 3 masters."""
    names = os.path.join(work, "l2.txt")
    B.write_names(names, [f"l2-{i}.u.example.test." for i in range(n)])
    rows = []
    if cluster:
        cases = (("one Redis", "bench fleet", "single"), ("Redis Cluster, 3 masters",
                                                           "bench fleet", "cluster"))
    else:
        cases = (("with key_secret (sealed)", "bench fleet", "single"),
                 ("without key_secret", "", "single"))
    for label, secret, kind in cases:
        rd = Redis(extra=["--maxmemory", "1gb"]) if kind == "single" else RedisCluster()
        try:
            conf = os.path.join(work, f"l2-{len(secret)}-{kind}.yaml")
            with open(conf, "w") as f:
                f.write(f'redis:\n  key_secret: "{secret}"\n')
                if kind == "cluster":
                    seeds = ", ".join(f'"127.0.0.1:{p}"' for p in rd.masters())
                    f.write(f"  cluster: true\n  nodes: [{seeds}]\n")
            more = (["--redis", rd.url] if kind == "single" else []) + ["-c", conf]
            port = free_port()
            a = subprocess.Popen(B.rrcache_args(port, knot_port) + more,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            B.wait_port(port, a)
            time.sleep(0.5)  # the slot map read
            B.dnsperf(port, names, once=True, qps=20000)
            a.send_signal(signal.SIGTERM)
            a.wait(30)
            base, _ = one_run(knot_port, 1, work, warm, None, more)
            m, nm = one_run(knot_port, 1, work, warm, names, more)
            rows.append((label, (m - base) / max(nm, 1)))
            print(f"L2 hit {label}: {rows[-1][1]:.0f} instructions", flush=True)
        finally:
            rd.stop()
    return rows


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([line.split()[1] for line in f if line.startswith("VmRSS")][0])


def write_section(head, body):
    """Replaces the section that starts with head in bench/RESULTS.md (kept by bench/run.py
    below its mark) with head and body."""
    path = os.path.join(HERE, "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else ""
    if B.KEPT_MARK not in text:
        text = text.rstrip("\n") + "\n\n" + B.KEPT_MARK + "\n"
    i = text.find(head)
    if i >= 0:
        j = text.find("\n## ", i + len(head))
        text = text[:i] + (text[j + 1:] if j >= 0 else "")
    with open(path, "w") as f:
        f.write(text.rstrip("\n") + "\n\n" + body)


def policy_costs(knot_port, work, warm, hits, n_hits):
    """The 1 M-name blocklist: load time and memory (native runs), instructions per hit with
    and without it and per blocked query (callgrind)."""
    big = os.path.join(work, "block-1m.txt")
    # Names of 2 to 5 labels, as real lists have, so that every suffix of a query is looked up.
    def listed(i):
        return [f"t{i}.example", f"n{i}.tracker{i % 997}.example",
                f"a.n{i}.ads{i % 31}.example", f"x.a.n{i}.cdn{i % 7}.example"][i % 4]
    with open(big, "w") as f:
        for i in range(1000000):
            f.write(listed(i) + "\n")
    blocked = os.path.join(work, "blocked.txt")
    B.write_names(blocked, [listed(i * 97 % 1000000) + "." for i in range(n_hits)])
    loads, rss = [], []
    for with_list in (False, True, False, True, False, True):
        port = free_port()
        more = (["--blocklist", big] if with_list else []) + ["--log-level", "info"]
        p = subprocess.Popen(B.rrcache_args(port, knot_port) + more,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        B.wait_port(port, p)
        rss.append((with_list, rss_kb(p.pid)))
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=30)[1]
        m = re.search(r"policy: (\d+) rules .* in (\d+) ms", err)
        if with_list and m:
            loads.append(int(m.group(2)))
    plain = sorted(k for w, k in rss if not w)[1]
    listed = sorted(k for w, k in rss if w)[1]
    print(f"1,000,000-name blocklist: load {sorted(loads)[1]} ms (median of 3), resident "
          f"memory +{(listed - plain) * 1024 / 1e6:.1f} bytes per name "
          f"({plain} kB without, {listed} kB with)", flush=True)
    # Nanoseconds per check, the matcher alone (bench/policy_lookup.c).
    root = os.path.dirname(HERE)
    exe = os.path.join(work, "policy_lookup")
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I", os.path.join(root, "include"),
                    os.path.join(HERE, "policy_lookup.c"), os.path.join(root, "src", "policy.c"),
                    "-o", exe], check=True)
    runs = [subprocess.run([exe, big], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(3)]
    hot_ns = sorted(float(r[0]) for r in runs)[1]
    cold_ns = sorted(float(r[1]) for r in runs)[1]
    print(f"per check: {hot_ns:.0f} ns for a name asked again, {cold_ns:.0f} ns for a name "
          f"never asked (medians of 3)", flush=True)
    more = ["--blocklist", big]
    base0, _ = one_run(knot_port, 1, work, warm, None)
    h0, n0 = one_run(knot_port, 1, work, warm, hits)
    base1, _ = one_run(knot_port, 1, work, warm, None, more)
    h1, n1 = one_run(knot_port, 1, work, warm, hits, more)
    b1, nb = one_run(knot_port, 1, work, warm, blocked, more)
    per0, per1 = (h0 - base0) / max(n0, 1), (h1 - base1) / max(n1, 1)
    per_blocked = (b1 - base1) / max(nb, 1)
    # The rate limit's check, every query allowed (a limit far above the load).
    rl_conf = os.path.join(work, "ratelimit.yaml")
    with open(rl_conf, "w") as f:
        f.write("ratelimit:\n  qps: 1000000\n")
    base2, _ = one_run(knot_port, 1, work, warm, None, ["-c", rl_conf])
    h2, n2 = one_run(knot_port, 1, work, warm, hits, ["-c", rl_conf])
    per_rl = (h2 - base2) / max(n2, 1)
    print(f"per hit with ratelimit on: {per_rl:.0f} instructions (+{per_rl - per0:.0f})",
          flush=True)
    print(f"per hit: {per0:.0f} instructions without a list, {per1:.0f} with the 1 M list "
          f"(+{per1 - per0:.0f}); per blocked query: {per_blocked:.0f}", flush=True)
    write_policy_section(sorted(loads)[1], (listed - plain) * 1024 / 1e6, per0, per1, per_blocked,
                         hot_ns, cold_ns, per_rl)
    return per0, per1, per_blocked


def write_policy_section(load_ms, rss_per_name, per0, per1, per_blocked, hot_ns, cold_ns,
                         per_rl):
    """Replaces the domain-list section of bench/RESULTS.md (kept by bench/run.py)."""
    head = "## Domain lists: a blocklist of 1,000,000 names (bench/instructions.py --policy)"
    write_section(head, f"{head}\n\n"
               f"Measured {time.strftime('%Y-%m-%d')}; names of 2 to 5 labels; the names asked "
               f"are not on the list, so every query pays the check.\n\n"
               f"| figure | value | target |\n|---|---|---|\n"
               f"| load time (median of 3) | {load_ms} ms | < 1 s |\n"
               f"| resident memory added | {rss_per_name:.1f} bytes per name | <= 40 |\n"
               f"| instructions per cache hit | {per0:.0f} without a list, {per1:.0f} with it "
               f"(+{per1 - per0:.0f}) | <= 150 ns added |\n"
               f"| time per check, a name asked again (a cache hit's case) | {hot_ns:.0f} ns "
               f"| <= 150 ns |\n"
               f"| time per check, a name never asked (4 labels) | {cold_ns:.0f} ns | |\n"
               f"| instructions per blocked query (answered without the cache) | "
               f"{per_blocked:.0f} | |\n"
               f"| instructions per cache hit with ratelimit on (every query allowed) | "
               f"{per_rl:.0f} (+{per_rl - per0:.0f}) | |\n"
               + "\nA hit with lists pays two things: the name's check (its suffixes against the "
               "filter and the table) and the walk of the cached answer for CNAMEs (cloaking).\n")


def dynblock_costs(knot_port, work, warm, hits, misses):
    """Instructions per hit and per miss with dynblock watching both rates (set far above the
    load, so nothing is blocked), and per query of a blocked prefix (the warm-up's misses
    start the block: miss_rate 1)."""
    def conf(name, text):
        path = os.path.join(work, name)
        with open(path, "w") as f:
            f.write(text)
        return ["-c", path]
    watch = conf("dynblock-watch.yaml",
                 "dynblock:\n  nxdomain_rate: 1000000\n  miss_rate: 1000000\n")
    block = conf("dynblock-block.yaml", "dynblock:\n  miss_rate: 1\n  window: 1s\n"
                 "  duration: 1h\n  action: refused\n")
    per = {}
    for label, more in (("off", []), ("watching", watch)):
        base, _ = one_run(knot_port, 1, work, warm, None, more)
        h, nh = one_run(knot_port, 1, work, warm, hits, more)
        m, nm = one_run(knot_port, 1, work, warm, misses, more)
        per[label] = ((h - base) / max(nh, 1), (m - base) / max(nm, 1))
    base, _ = one_run(knot_port, 1, work, warm, None, block)
    b, nb = one_run(knot_port, 1, work, warm, hits, block)
    per_blocked = (b - base) / max(nb, 1)
    (h0, m0), (h1, m1) = per["off"], per["watching"]
    print(f"dynblock: per hit {h0:.0f} -> {h1:.0f} (+{h1 - h0:.0f}), per miss {m0:.0f} -> "
          f"{m1:.0f} (+{m1 - m0:.0f}) instructions with both rates watched; per query of a "
          f"blocked prefix: {per_blocked:.0f}", flush=True)
    head = "## Dynamic blocks (bench/instructions.py --dynblock)"
    write_section(head, f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; 1 worker; callgrind "
               f"instructions per query.\n\n| query | dynblock off | both rates watched |\n"
               f"|---|---|---|\n| cache hit | {h0:.0f} | {h1:.0f} (+{h1 - h0:.0f}) |\n"
               f"| miss | {m0:.0f} | {m1:.0f} (+{m1 - m0:.0f}) |\n"
               f"| query of a blocked prefix (REFUSED) | | {per_blocked:.0f} |\n\n"
               "While no block is in force a query pays one atomic load; a miss with "
               "miss_rate set takes its prefix's set lock once.\n")


def routing_costs(knot_port, work, warm, hits, misses, n):
    """Instructions per hit and per miss with pools and local data configured (the names
    asked under none of them) against none, per local answer, per empty-zone answer."""
    conf = os.path.join(work, "routing.yaml")
    hosts = os.path.join(work, "hosts")
    with open(hosts, "w") as f:
        for i in range(1000):
            f.write(f"10.1.{i // 250}.{i % 250 + 1} host{i}\n")
    with open(conf, "w") as f:
        f.write("upstream:\n  pools:\n")
        for p in range(10):
            doms = ", ".join(f"d{p}-{k}.corp.test" for k in range(50))
            f.write(f"    - name: p{p}\n      domains: [{doms}]\n"
                    f"      servers: [\"127.0.0.1:{knot_port}\"]\n")
        f.write("local:\n  domain: lan\n  hosts_files: [\"%s\"]\n  records:\n" % hosts)
        for i in range(100):
            f.write(f'    - "r{i}.lan. 300 IN A 192.168.2.{i + 1}"\n')
    local = os.path.join(work, "local.txt")
    B.write_names(local, [f"host{i % 1000}.lan." for i in range(n)])
    rev = os.path.join(work, "rev.txt")
    with open(rev, "w") as f:
        for i in range(n):
            f.write(f"{i % 250}.{i // 250 % 250}.168.192.in-addr.arpa. PTR\n")
    per = {}
    for label, more in (("none", ["-c", os.path.join(work, "empty.yaml")]),
                        ("configured", ["-c", conf])):
        if label == "none":
            with open(more[1], "w") as f:
                f.write("local:\n  private_reverse: false\n")
        base, _ = one_run(knot_port, 1, work, warm, None, more)
        h, nh = one_run(knot_port, 1, work, warm, hits, more)
        m, nm = one_run(knot_port, 1, work, warm, misses, more)
        per[label] = ((h - base) / max(nh, 1), (m - base) / max(nm, 1))
        if label == "configured":
            lo, nl = one_run(knot_port, 1, work, warm, local, more)
            rv, nr = one_run(knot_port, 1, work, warm, rev, more)
            per_local, per_rev = (lo - base) / max(nl, 1), (rv - base) / max(nr, 1)
    (h0, m0), (h1, m1) = per["none"], per["configured"]
    print(f"routing: per hit {h0:.0f} -> {h1:.0f} (+{h1 - h0:.0f}), per miss {m0:.0f} -> "
          f"{m1:.0f} (+{m1 - m0:.0f}); per local answer {per_local:.0f}, per private reverse "
          f"answer {per_rev:.0f}", flush=True)
    head = "## Routing and local data (bench/instructions.py --routing)"
    write_section(head, f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; 1 worker; callgrind "
               f"instructions per query. \"Configured\": 10 pools of 50 domains each, 100 "
               f"local records, a hosts file of 1,000 names (with local.domain: 2,000 names "
               f"and 1,000 PTRs), the private reverse zones; the hits and misses asked are "
               f"under none of them.\n\n| query | none | configured |\n|---|---|---|\n"
               f"| cache hit | {h0:.0f} | {h1:.0f} (+{h1 - h0:.0f}) |\n"
               f"| miss | {m0:.0f} | {m1:.0f} (+{m1 - m0:.0f}) |\n"
               f"| local answer (hosts file) | | {per_local:.0f} |\n"
               f"| private reverse answer (NXDOMAIN) | | {per_rev:.0f} |\n")


def dot_costs(knot_port, work, warm, misses):
    """Instructions per miss over UDP to knot, and over TLS to unbound forwarding to the same
    knot (its cache cannot help: every name is new), one worker; and the TLS handshakes."""
    certs = make_certs(work)
    tail = (f"forward-zone:\n    name: \"example.test.\"\n"
            f"    forward-addr: 127.0.0.1@{knot_port}\n")
    ub = UnboundTls(certs["cert"], certs["key"], [],
                    extra="    do-not-query-localhost: no\n    local-zone: \"test.\" nodefault\n"
                          "    tcp-idle-timeout: 120000\n    incoming-num-tcp: 100\n",
                    tail=tail)
    conf = os.path.join(work, "dot.yaml")
    with open(conf, "w") as f:
        f.write(f"tls:\n  ca_file: {certs['ca']}\nupstream:\n  timeout: 2s\n"
                f"  client_timeout: 4s\n")
    try:
        dot = f"tls://127.0.0.1:{ub.port}#dot.test"
        per = {}
        metrics = []
        for label, up, more in (("udp", None, []), ("dot", dot, ["-c", conf])):
            base, _ = one_run(knot_port, 1, work, warm, None, more, upstream=up)
            m, nm = one_run(knot_port, 1, work, warm, misses, more, upstream=up,
                            scrape=metrics if label == "dot" else None)
            per[label] = ((m - base) / max(nm, 1), nm)
    finally:
        ub.stop()
    text = metrics[-1] if metrics else ""
    hs = sum(float(v) for v in re.findall(r"^rrcache_upstream_tls_handshakes_total\{[^}]*\} (\S+)",
                                         text, re.M))
    (udp, n), (tls, n2) = per["udp"], per["dot"]
    # The warm-up's 1,000 names and the measured misses all went over TLS in that run.
    n2 = int(n2)
    total = 1000 + n2
    print(f"per miss: {udp:.0f} instructions over UDP, {tls:.0f} over TLS "
          f"({tls / udp:.2f} x); {hs:.0f} TLS handshakes for {total} misses "
          f"({hs * 10000 / total:.1f} per 10,000)", flush=True)
    head = "## DNS over TLS to upstreams (bench/instructions.py --dot)"
    write_section(head, f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; 1 worker; callgrind "
                  f"instructions per miss (rrcache only), {n2:,} misses of new names; the TLS "
                  f"server is unbound forwarding to the same knot.\n\n"
                  f"| miss over | instructions | ratio |\n|---|---|---|\n"
                  f"| UDP | {udp:.0f} | 1 |\n| TLS (warm connection) | {tls:.0f} | "
                  f"{tls / udp:.2f} |\n\nTLS handshakes: {hs:.0f} for {total:,} misses "
                  f"({hs * 10000 / total:.1f} per 10,000).\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hits", type=int, default=20000)
    ap.add_argument("--misses", type=int, default=5000)
    ap.add_argument("--redis", action="store_true", help="also per L2 hit")
    ap.add_argument("--policy", action="store_true",
                    help="only the cost of a 1 M-name blocklist (per hit, load, memory)")
    ap.add_argument("--dynblock", action="store_true",
                    help="only the cost of the dynamic blocks (per hit, miss, blocked query)")
    ap.add_argument("--routing", action="store_true",
                    help="only the cost of pools and local data (per hit, miss, local answer)")
    ap.add_argument("--dot", action="store_true",
                    help="only a miss over DNS over TLS against one over UDP")
    ap.add_argument("--cluster", action="store_true",
                    help="only an L2 hit with one Redis against one with a Redis Cluster")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rrc-insn-")
    knot = Knot(extra_zone=B.zone_extra())
    try:
        warm = os.path.join(work, "warm.txt")
        B.write_names(warm, [f"b{i}.example.test." for i in range(1000)])
        hits = os.path.join(work, "hits.txt")
        B.write_names(hits, [f"b{i % 1000}.example.test." for i in range(args.hits)])
        misses = os.path.join(work, "misses.txt")
        B.write_names(misses, [f"i{i}.u.example.test." for i in range(args.misses)])
        if args.policy:
            policy_costs(knot.port, work, warm, hits, args.hits)
            return
        if args.dynblock:
            dynblock_costs(knot.port, work, warm, hits, misses)
            return
        if args.routing:
            routing_costs(knot.port, work, warm, hits, misses, args.hits)
            return
        if args.dot:
            dot_costs(knot.port, work, warm, misses)
            return
        if args.cluster:
            rows = l2_hits(knot.port, work, warm, 3000, cluster=True)
            (l1, single), (l2, clu) = rows
            head = "## L2 hits with Redis Cluster (bench/instructions.py --cluster)"
            write_section(head, f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; 1 worker; "
                          f"callgrind instructions per L2 hit (cold L1, 3,000 names, sealed "
                          f"values), rrcache only.\n\n| Redis | instructions per L2 hit |\n"
                          f"|---|---|\n| {l1} | {single:.0f} |\n| {l2} | {clu:.0f} "
                          f"(+{clu - single:.0f}) |\n")
            return
        rows = []
        for workers in (1, 2):
            base, _ = one_run(knot.port, workers, work, warm, None)
            h, nh = one_run(knot.port, workers, work, warm, hits)
            if workers == 1:
                f = inclusive(one_run.last_file, {"rrc_cache_lookup", "rrc_cache_siphash",
                                                  "rrc_query_handle"})
                # The shard lock is held for the lookup minus the key hash (computed before
                # taking it); lock and unlock calls themselves are included.
                held = (f.get("rrc_cache_lookup", 0) - f.get("rrc_cache_siphash", 0)) / nh
                print(f"per hit: rrc_query_handle {f.get('rrc_query_handle', 0) / nh:.0f}, "
                      f"rrc_cache_lookup {f.get('rrc_cache_lookup', 0) / nh:.0f}, of which "
                      f"under the shard lock about {held:.0f} instructions", flush=True)
            m, nm = one_run(knot.port, workers, work, warm, misses)
            rows.append((workers, (h - base) / max(nh, 1), (m - base) / max(nm, 1)))
            print(f"workers={workers}: {rows[-1][1]:.0f} instructions per hit, "
                  f"{rows[-1][2]:.0f} per miss", flush=True)
        l2 = l2_hits(knot.port, work, warm, 3000) if args.redis else []
    finally:
        knot.stop()
    print("\n| workers | instructions per hit | instructions per miss |\n|---|---|---|")
    for w, h, m in rows:
        print(f"| {w} | {h:.0f} | {m:.0f} |")
    for label, v in l2:
        print(f"L2 hit, 1 worker, {label}: {v:.0f} instructions")


if __name__ == "__main__":
    main()

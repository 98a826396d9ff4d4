#!/usr/bin/python3
"""DNS over TLS and HTTPS, rrcache against dnsdist on the same machine in the same run.

Cache hits: rrcache's listen_tls and listen_https against dnsdist's DoT and DoH listeners
(addTLSLocal, addDOHLocal, its packet cache), each server pinned to one CPU and the load
generator to the other: dnsperf (-m udp / -m dot, 8 connections) for UDP and DoT, h2load
(nghttp2-client: GET /dns-query?dns=..., 8 connections of up to 100 streams) for DoH, because
dnsperf's DoH mode loses most answers of dnsdist 1.7's HTTP/2 frontend. Figures: answers a
second and server CPU microseconds per answer, and their ratios to dnsdist's.

Misses over DoT: the CPU a miss sent to the upstream over DNS over TLS costs against one sent
over UDP, for rrcache (tls://) and dnsdist (newServer tls="openssl"), every name new, at one
fixed query rate for both transports so each pays the same wake-ups; the TLS upstream is an
rrcache listen_tls instance forwarding to the same knot over UDP (unbound's and dnsdist's DoT
servers answer only 1,400 and 11,700 queries a second on one connection here).

Writes its sections of bench/RESULTS.md.

Usage: bench/encrypted.py [--seconds N] [--rounds N] [--miss-rate QPS] [--only hits|misses]
"""
import argparse
import base64
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
import run as B  # noqa: E402
from helpers import Knot, free_port, make_certs  # noqa: E402
from instructions import write_section  # noqa: E402


def start(cmd, port, work, name):
    log = open(os.path.join(work, name + ".log"), "w")
    proc = subprocess.Popen(["taskset", "-c", B.SERVER_CPU] + cmd, stdout=log,
                            stderr=subprocess.STDOUT)
    B.wait_port(port, proc)
    return proc


def rrcache(knot_port, certs, work):
    ports = {"udp": free_port(), "dot": free_port(), "doh": free_port()}
    conf = os.path.join(work, "rrcache.yaml")
    with open(conf, "w") as f:
        f.write(f"""listen_tls: ["127.0.0.1:{ports['dot']}"]
listen_https: ["127.0.0.1:{ports['doh']}"]
tls:
  cert_file: {certs['cert']}
  key_file: {certs['key']}
tcp:
  max_connections_per_client: 1024
""")
    args = B.rrcache_args(ports["udp"], knot_port) + ["-c", conf]
    return start(args, ports["udp"], work, "rrcache"), ports


def dnsdist(knot_port, certs, work):
    ports = {"udp": free_port(), "dot": free_port(), "doh": free_port()}
    conf = os.path.join(work, "dnsdist.conf")
    with open(conf, "w") as f:
        f.write(f"""setLocal("127.0.0.1:{ports['udp']}")
addTLSLocal("127.0.0.1:{ports['dot']}", "{certs['cert']}", "{certs['key']}")
addDOHLocal("127.0.0.1:{ports['doh']}", "{certs['cert']}", "{certs['key']}", "/dns-query")
setACL({{"127.0.0.0/8"}})
setSecurityPollSuffix("")
newServer({{address="127.0.0.1:{knot_port}", healthCheckMode="lazy"}})
pc = newPacketCache(1000000, {{maxTTL=86400, minTTL=0}})
getPool(""):setCache(pc)
""")
    return start(["dnsdist", "--supervised", "--disable-syslog", "-C", conf], ports["udp"],
                 work, "dnsdist"), ports


def perf(port, mode, names, seconds):
    cmd = ["taskset", "-c", B.CLIENT_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
           "-d", names, "-c", "8", "-T", "1", "-q", "200", "-t", "2", "-m", mode]
    if seconds:
        cmd += ["-l", str(seconds)]
    else:
        cmd += ["-n", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    res = {}
    for key, pat in [("completed", r"Queries completed:\s+(\d+)"),
                     ("qps", r"Queries per second:\s+([\d.]+)")]:
        m = re.search(pat, out)
        res[key] = float(m.group(1)) if m else 0.0
    m = re.search(r"NOERROR \d+ \(([\d.]+)%\)", out)
    res["noerror_pct"] = float(m.group(1)) if m else 0.0
    return res


def with_cpu(proc, run):
    """run()'s result with cpu_us: the server's CPU microseconds per completed query."""
    c0 = B.schedstat_ns(proc.pid)
    r = run()
    r["cpu_us"] = (B.schedstat_ns(proc.pid) - c0) / 1000.0 / max(r["completed"], 1)
    return r


def dns_query(name):
    """A DNS query for name's A record with EDNS (ID 0, as RFC 8484 asks for cacheable GETs)."""
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    return (b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01" + wire + b"\x00\x00\x01\x00\x01"
            + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")


def h2load(port, uris, seconds):
    """DoH GETs of the URIs in the file uris (over and over) for seconds, or each once."""
    cmd = ["taskset", "-c", B.CLIENT_CPU, "h2load", "-c", "8", "-m", "100",
           "-H", "accept: application/dns-message", "-i", uris.format(port=port)]
    cmd += ["-D", str(seconds)] if seconds else ["-n", str(B.HOT_NAMES)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = int(m.group(1)) if m else 0
    return {"completed": float(done), "qps": float(rate.group(1)) if rate else 0.0,
            "noerror_pct": 100.0 * int(ok.group(1)) / done if ok and done else 0.0}


def hits(work, certs, knot, seconds, rounds):
    names = os.path.join(work, "hot.txt")
    hot = [f"b{i}.example.test." for i in range(B.HOT_NAMES)]
    B.write_names(names, hot)
    uris = os.path.join(work, "hot-{port}.uris")

    def write_uris(port):
        with open(uris.format(port=port), "w") as f:
            for n in hot:
                b64 = base64.urlsafe_b64encode(dns_query(n)).rstrip(b"=").decode()
                f.write(f"https://127.0.0.1:{port}/dns-query?dns={b64}\n")
    res = {(s, m): [] for s in ("rrcache", "dnsdist") for m in ("udp", "dot", "doh")}
    for rnd in range(rounds):
        for name, fn in (("rrcache", rrcache), ("dnsdist", dnsdist)):
            proc, ports = fn(knot.port, certs, work)
            write_uris(ports["doh"])
            try:
                for mode in ("udp", "dot", "doh"):
                    def load(secs):
                        if mode == "doh":
                            return h2load(ports[mode], uris, secs)
                        return perf(ports[mode], mode, names, secs)
                    load(None)  # warm: every name cached
                    r = with_cpu(proc, lambda: load(seconds))
                    if r["noerror_pct"] < 99:
                        print(f"WARNING: {name} {mode}: {r['noerror_pct']}% answered",
                              flush=True)
                    res[(name, mode)].append(r)
                    print(f"round {rnd + 1}: {name} {mode}: {r['qps']:.0f} q/s, "
                          f"{r['cpu_us']:.2f} us CPU per answer", flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)

    def med(name, mode, key):
        return statistics.median(r[key] for r in res[(name, mode)])
    rows = []
    for mode in ("udp", "dot", "doh"):
        rq, dq = med("rrcache", mode, "qps"), med("dnsdist", mode, "qps")
        rc, dc = med("rrcache", mode, "cpu_us"), med("dnsdist", mode, "cpu_us")
        rows.append(f"| {mode.upper()} | {rq:,.0f} | {dq:,.0f} | {rq / dq:.2f} | {rc:.2f} | "
                    f"{dc:.2f} | {rc / dc:.2f} |")
    head = "## Cache hits over DNS over TLS and HTTPS (bench/encrypted.py)"
    ver = subprocess.run(["dnsdist", "--version"], capture_output=True, text=True).stdout.split()[1]
    body = (f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; 1,000 names cached; UDP and DoT: "
            f"dnsperf with 8 connections (-m udp/dot, 200 outstanding); DoH: h2load with 8 "
            f"connections of up to 100 streams, GET of the same 1,000 names; {seconds} s per "
            f"run, medians of {rounds} rounds; each server pinned to CPU {B.SERVER_CPU}, the "
            f"load generator to CPU {B.CLIENT_CPU}; dnsdist {ver} with its packet cache, DoT "
            "over OpenSSL and DoH over its own HTTP/2 (h2o). CPU: all the server's threads.\n\n"
            "| transport | rrcache q/s | dnsdist q/s | ratio | rrcache CPU us/answer | "
            "dnsdist CPU us/answer | ratio |\n|---|---|---|---|---|---|---|\n" +
            "\n".join(rows) + "\n")
    print(body)
    write_section(head, body)


def tls_upstream(knot_port, certs, work):
    """An rrcache serving DNS over TLS on CPU CLIENT_CPU, forwarding to knot over UDP: the
    upstream of the DoT misses."""
    port, tls = free_port(), free_port()
    conf = os.path.join(work, "upstream.yaml")
    with open(conf, "w") as f:
        f.write(f'listen_tls: ["127.0.0.1:{tls}"]\ntls:\n  cert_file: {certs["cert"]}\n'
                f'  key_file: {certs["key"]}\n')
    args = B.rrcache_args(port, knot_port, cache_size="64MiB") + ["-c", conf]
    proc = subprocess.Popen(["taskset", "-c", B.CLIENT_CPU] + args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    B.wait_port(port, proc)
    return proc, tls


def forwarder(name, knot_port, tls_port, certs, work, over):
    """rrcache or dnsdist (no cache) forwarding to knot over UDP or to tls_port over TLS."""
    port = free_port()
    if name == "rrcache":
        args = B.rrcache_args(port, knot_port, cache_size="64MiB")
        if over == "dot":
            conf = os.path.join(work, "fw.yaml")
            with open(conf, "w") as f:
                f.write(f"tls:\n  ca_file: {certs['ca']}\n")
            args[args.index("--upstream") + 1] = f"tls://127.0.0.1:{tls_port}#dot.test"
            args += ["-c", conf]
        return start(args, port, work, f"fw-{name}-{over}"), port
    backend = (f'newServer({{address="127.0.0.1:{knot_port}", healthCheckMode="lazy"}})'
               if over == "udp" else
               f'newServer({{address="127.0.0.1:{tls_port}", tls="openssl", '
               f'subjectName="dot.test", caStore="{certs["ca"]}", maxInFlight=200, '
               f'healthCheckMode="lazy"}})')
    conf = os.path.join(work, f"fw-{over}.conf")
    with open(conf, "w") as f:
        f.write(f'setLocal("127.0.0.1:{port}")\nsetACL({{"127.0.0.0/8"}})\n'
                f'setSecurityPollSuffix("")\n{backend}\n')
    return start(["dnsdist", "--supervised", "--disable-syslog", "-C", conf], port, work,
                 f"fw-{name}-{over}"), port


def misses(work, certs, knot, rate, rounds):
    up, tls_port = tls_upstream(knot.port, certs, work)
    n = rate * 5
    res = {(s, o): [] for s in ("rrcache", "dnsdist") for o in ("udp", "dot")}
    try:
        for rnd in range(rounds):
            for name in ("rrcache", "dnsdist"):
                for over in ("udp", "dot"):
                    proc, port = forwarder(name, knot.port, tls_port, certs, work, over)
                    try:
                        tag = f"r{rnd}{name[0]}{over}"
                        warm = os.path.join(work, f"{tag}-warm.txt")
                        B.write_names(warm, [f"w{i}.{tag}.u.example.test." for i in range(500)])
                        B.dnsperf(port, warm, once=True, outstanding=20)
                        names = os.path.join(work, f"{tag}.txt")
                        B.write_names(names, [f"m{i}.{tag}.u.example.test." for i in range(n)])
                        r = with_cpu(proc, lambda: B.dnsperf(port, names, once=True, qps=rate,
                                                             outstanding=200))
                        if r["noerror_pct"] < 99 or r["completed"] < n * 0.99:
                            print(f"WARNING: {name} over {over}: {r['completed']:.0f} of {n} "
                                  f"answered, {r['noerror_pct']}% NOERROR", flush=True)
                        res[(name, over)].append(r)
                        print(f"round {rnd + 1}: {name}, misses over {over}: {r['qps']:.0f} "
                              f"q/s, {r['cpu_us']:.2f} us CPU per miss", flush=True)
                    finally:
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(30)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)

    def med(name, over):
        return statistics.median(r["cpu_us"] for r in res[(name, over)])
    rows = []
    for name in ("rrcache", "dnsdist"):
        u, t = med(name, "udp"), med(name, "dot")
        rows.append(f"| {name} | {u:.2f} | {t:.2f} | {t / u:.2f} |")
    head = "## Misses over DNS over TLS (bench/encrypted.py)"
    body = (f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; {n:,} new names at {rate:,} "
            f"queries a second (dnsperf, 8 connections), medians of {rounds} rounds; the "
            f"forwarder pinned to CPU {B.SERVER_CPU} without a cache for these names, 1 "
            f"worker; upstream over UDP: knot; over TLS: an rrcache listen_tls on CPU "
            f"{B.CLIENT_CPU} forwarding to the same knot (rrcache: tls:// with its defaults; "
            "dnsdist: newServer tls=\"openssl\", maxInFlight=200 for out-of-order answers). CPU microseconds per miss, all threads, "
            "kernel included.\n\n| forwarder | miss over UDP | miss over TLS | ratio |\n"
            "|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(body)
    write_section(head, body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--miss-rate", type=int, default=20000)
    ap.add_argument("--only", choices=("hits", "misses"))
    args = ap.parse_args()
    for tool, pkg in (("dnsperf", "dnsperf"), ("dnsdist", "dnsdist"), ("h2load", "nghttp2-client")):
        if not shutil.which(tool):
            sys.exit(f"bench/encrypted.py needs {tool} (Debian package {pkg}; "
                     "sh bench/bench.sh installs it)")
    work = tempfile.mkdtemp(prefix="rrc-bench-enc-")
    certs = make_certs(work)
    knot = Knot(extra_zone=B.zone_extra())
    try:
        if args.only != "misses":
            hits(work, certs, knot, args.seconds, args.rounds)
        if args.only != "hits":
            misses(work, certs, knot, args.miss_rate, args.rounds)
    finally:
        knot.stop()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Benchmark rrcache against dnsdist, Unbound and dnsmasq on this machine, in one run.

Each server under test is pinned to one core and dnsperf to the other; workloads run
interleaved (A B C A B C ...) for several rounds, and every figure is also reported as a ratio
to dnsdist's in the same run, because the machine is shared and noisy. Server CPU per answered
query comes from the kernel's per-thread run time (/proc/PID/task/*/schedstat, nanoseconds):
dnsperf saturates its own core near the reflector's rate, so qps alone cannot rank servers.

Usage: bench/run.py [--quick] [--servers rrcache,dnsdist,...] [--out bench/RESULTS.md]
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from helpers import Knot, Redis, free_port, wait_answering  # noqa: E402

RRCACHE = os.environ.get("RRCACHE_BIN", os.path.join(ROOT, "build", "src", "rrcache"))
SERVER_CPU = "1"
CLIENT_CPU = "0"
HOT_NAMES = 1000
ZONE_NAMES = 20000


def zone_extra():
    lines = [f"b{i} 3600 IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
             for i in range(ZONE_NAMES)]
    lines.append("*.u 3600 IN A 192.0.2.200")
    return "\n".join(lines) + "\n"


def schedstat_ns(pid):
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    except OSError:
        pass
    return total


def user_sys_ticks(pid):
    """User and system time of all the process's threads, in clock ticks (1/100 s)."""
    u = k = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                u += int(fields[11])
                k += int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        pass
    return u, k


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# A real question: the peers do not all answer a header-only query.
PROBE = b"\x52\x54\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + \
    b"\x02b0\x07example\x04test\x00\x00\x01\x00\x01"


def wait_port(port, proc, deadline=15):
    wait_answering(port, proc=proc, deadline=deadline, probe=PROBE)


def rrcache_args(port, upstream_port, workers=1, cache_size="512MiB", redis_url=None):
    args = [RRCACHE, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
            "--workers", str(workers), "--cache-size", cache_size, "--log-level", "warning",
            "--metrics", f"127.0.0.1:{free_port()}"]
    return args + (["--redis", redis_url] if redis_url else [])


class Server:
    def __init__(self, name, upstream_port, workdir):
        self.name = name
        self.port = free_port()
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        cmd = getattr(self, "cmd_" + name.replace("-", "_"))(upstream_port)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        self.pid = self.proc.pid

    def cmd_rrcache(self, up):
        return rrcache_args(self.port, up)

    def cmd_dnsdist(self, up):
        conf = os.path.join(self.dir, "dnsdist.conf")
        with open(conf, "w") as f:
            f.write(f"""setLocal("127.0.0.1:{self.port}")
setACL({{"127.0.0.0/8"}})
setSecurityPollSuffix("")
newServer({{address="127.0.0.1:{up}", healthCheckMode="lazy"}})
pc = newPacketCache(1000000, {{maxTTL=86400, minTTL=0}})
getPool(""):setCache(pc)
""")
        return ["dnsdist", "--supervised", "--disable-syslog", "-C", conf]

    def cmd_unbound(self, up):
        conf = os.path.join(self.dir, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    interface: 127.0.0.1@{self.port}
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    username: ""
    chroot: ""
    directory: "{self.dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    msg-cache-size: 256m
    rrset-cache-size: 256m
    domain-insecure: "example.test."
    # test. is one of Unbound's default locally served zones (RFC 6761): answer it by
    # forwarding instead.
    local-zone: "test." nodefault
forward-zone:
    name: "example.test."
    forward-addr: 127.0.0.1@{up}
""")
        return ["unbound", "-d", "-c", conf]

    def cmd_dnsmasq(self, up):
        return ["dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--server=/example.test/127.0.0.1#{up}", "--cache-size=10000",
                "--pid-file=", "--user=root"]

    def cmd_reflector(self, up):
        exe = os.path.join(self.dir, "reflector")
        subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "reflector.c")], check=True)
        return [exe, "127.0.0.1", str(self.port)]

    def cmd_relay(self, up):
        exe = os.path.join(self.dir, "relay")
        subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "relay.c")], check=True)
        return [exe, "127.0.0.1", str(self.port), "127.0.0.1", str(up)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def dnsperf(port, datafile, seconds=None, once=False, qps=None, verbose=False,
            outstanding=200):
    cmd = ["taskset", "-c", CLIENT_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
           "-d", datafile, "-c", "8", "-T", "1", "-q", str(outstanding), "-t", "2"]
    if seconds:
        cmd += ["-l", str(seconds)]
    if once:
        cmd += ["-n", "1"]
    if qps:
        cmd += ["-Q", str(qps)]
    if verbose:
        cmd += ["-v"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    res = {}
    for key, pat in [("sent", r"Queries sent:\s+(\d+)"),
                     ("completed", r"Queries completed:\s+(\d+)"),
                     ("lost", r"Queries lost:\s+(\d+)"),
                     ("qps", r"Queries per second:\s+([\d.]+)"),
                     ("avg_lat", r"Average Latency \(s\):\s+([\d.]+)")]:
        m = re.search(pat, out)
        res[key] = float(m.group(1)) if m else 0.0
    m = re.search(r"NOERROR \d+ \(([\d.]+)%\)", out)
    res["noerror_pct"] = float(m.group(1)) if m else 0.0
    if verbose:
        lats = [float(x) for x in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.M)]
        lats.sort()
        res["p99"] = lats[int(len(lats) * 0.99)] if lats else 0.0
        res["p50"] = lats[len(lats) // 2] if lats else 0.0
    return res


def measure(server, fn):
    c0 = schedstat_ns(server.pid)
    t0 = user_sys_ticks(server.pid)
    r = fn()
    c1 = schedstat_ns(server.pid)
    t1 = user_sys_ticks(server.pid)
    r["cpu_us_per_q"] = (c1 - c0) / 1000.0 / max(r["completed"], 1)
    du, dk = t1[0] - t0[0], t1[1] - t0[1]
    r["sys_share"] = dk / (du + dk) if du + dk else 0.0
    if r["noerror_pct"] < 99.0:
        print(f"WARNING: {server.name}: only {r['noerror_pct']}% NOERROR answers: its figures "
              "do not measure resolution", flush=True)
    return r


def write_names(path, names, qtype="A"):
    with open(path, "w") as f:
        for n in names:
            f.write(f"{n} {qtype}\n")


# Where the sections of other benchmarks begin in RESULTS.md (kept by a new run).
KEPT_MARK = "<!-- sections below are written by other benchmarks -->"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs, under 5 minutes")
    ap.add_argument("--servers", default="rrcache,dnsdist,unbound,dnsmasq,reflector,relay")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    secs = 4 if args.quick else 10
    miss_n = 40000 if args.quick else 200000
    names = args.servers.split(",")
    for tool, pkg in [("dnsperf", "dnsperf"), ("taskset", "util-linux"), ("knotd", "knot")]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install {pkg}")

    work = tempfile.mkdtemp(prefix="rrc-bench-")
    knot = Knot(extra_zone=zone_extra())
    hot = os.path.join(work, "hot.txt")
    write_names(hot, [f"b{i}.example.test." for i in range(HOT_NAMES)])
    results = {n: {w: [] for w in ("HIT", "MISS", "MIX", "LAT")} for n in names}
    rss = {n: [] for n in names}
    try:
        for rnd in range(rounds):
            for name in names:
                srv = Server(name, knot.port, work)
                try:
                    # HIT: warm the hot set, then measure.
                    dnsperf(srv.port, hot, once=True)
                    results[name]["HIT"].append(measure(srv, lambda: dnsperf(
                        srv.port, hot, seconds=secs)))
                    # MISS: unique names under the wildcard, one pass; RSS per new name.
                    miss = os.path.join(work, f"miss-{name}-{rnd}.txt")
                    write_names(miss, [f"m{rnd}-{i}.u.example.test." for i in range(miss_n)])
                    r0 = rss_bytes(srv.pid)
                    res = measure(srv, lambda: dnsperf(srv.port, miss, once=True))
                    r1 = rss_bytes(srv.pid)
                    results[name]["MISS"].append(res)
                    rss[name].append((r1 - r0) / max(res["completed"], 1))
                    # MIX: 90 % hot, 10 % unique.
                    mix = os.path.join(work, f"mix-{name}-{rnd}.txt")
                    mixed = []
                    for i in range(miss_n):
                        mixed.append(f"x{rnd}-{i}.u.example.test." if i % 10 == 9
                                     else f"b{i % HOT_NAMES}.example.test.")
                    write_names(mix, mixed)
                    results[name]["MIX"].append(measure(srv, lambda: dnsperf(
                        srv.port, mix, seconds=secs)))
                    # LAT: a fixed 10,000 qps over the hot set.
                    results[name]["LAT"].append(measure(srv, lambda: dnsperf(
                        srv.port, hot, seconds=secs, qps=10000, verbose=True)))
                finally:
                    srv.stop()
                print(f"round {rnd + 1}/{rounds} {name}: " + ", ".join(
                    f"{w} {results[name][w][-1]['qps']:.0f} qps "
                    f"{results[name][w][-1]['cpu_us_per_q']:.2f} us/q"
                    for w in ("HIT", "MISS", "MIX")), flush=True)
        budget = budget_check(knot.port, work, args.quick) if "rrcache" in names else None
        sc = syscall_costs(work, args.quick)
        l2 = redis_tier(knot.port, work, args.quick) if "rrcache" in names else None
    finally:
        knot.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, rss, names, args, rounds, secs, miss_n, budget, sc, l2)


def budget_check(knot_port, work, quick):
    """The byte budget: a flood of unique names into cache.size 16MiB must keep RSS within
    16 MiB + the idle RSS + 10 %. Idle = after a warm-up of 2,000 names, so that code pages
    touched by the first misses (ldns, libcrypto) count as idle, not as cache."""
    n = 300000 if quick else 1000000
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] +
                            rrcache_args(port, knot_port, cache_size="16MiB"))
    try:
        wait_port(port, proc)
        warm = os.path.join(work, "budget-warm.txt")
        write_names(warm, [f"w{i}.u.example.test." for i in range(2000)])
        dnsperf(port, warm, once=True)
        idle = rss_bytes(proc.pid)
        flood = os.path.join(work, "budget-flood.txt")
        write_names(flood, [f"f{i}.u.example.test." for i in range(n)])
        r = dnsperf(port, flood, once=True, outstanding=300)
        end = rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    limit = (16 * 2**20 + idle) * 1.1
    res = {"names": n, "answered": r["completed"], "idle": idle, "end": end, "limit": limit,
           "ok": end <= limit}
    print(f"budget: idle {idle / 2**20:.1f} MiB, after {n} names {end / 2**20:.1f} MiB, "
          f"limit {limit / 2**20:.1f} MiB: {'holds' if res['ok'] else 'EXCEEDED'}", flush=True)
    return res


def redis_tier(knot_port, work, quick):
    """The Redis tier against the same upstream: instance A fills Redis with unique names;
    fresh instances B answer them from Redis (L2 hits: cold L1, warm Redis), then from L1;
    misses through B pay Redis's GET and lock before the upstream. Redis runs on the client's
    CPU; the figures are rrcache's CPU per answered query and dnsperf's latency."""
    n = 20000 if quick else 100000
    rd = Redis(extra=["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"])
    subprocess.run(["taskset", "-p", "-c", CLIENT_CPU, str(rd.proc.pid)],
                   capture_output=True, check=False)
    names = os.path.join(work, "l2-names.txt")
    write_names(names, [f"l2-{i}.u.example.test." for i in range(n)])
    fresh = os.path.join(work, "l2-fresh.txt")
    write_names(fresh, [f"l2m-{i}.u.example.test." for i in range(n)])
    out = {}

    # A fleet shares a key_secret (docs/redis.md): values are sealed, and a sealed value is
    # not parsed by ldns again.
    conf = os.path.join(work, "l2.yaml")
    with open(conf, "w") as f:
        f.write("redis:\n  key_secret: \"bench fleet\"\n")

    def start():
        port = free_port()
        proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] +
                                rrcache_args(port, knot_port, redis_url=rd.url) + ["-c", conf])
        wait_port(port, proc)

        class S:
            pass
        srv = S()
        srv.name, srv.pid, srv.port, srv.proc = "rrcache", proc.pid, port, proc
        return srv

    def stop(srv):
        srv.proc.terminate()
        srv.proc.wait(10)
    try:
        a = start()
        try:
            # At a rate Redis keeps up with on dnsperf's CPU: at full speed some SETs pass
            # their deadline and are skipped, and the L2 run would then mix in misses.
            out["fill (L1 miss, Redis miss, upstream; 30,000 qps)"] = measure(
                a, lambda: dnsperf(a.port, names, once=True, qps=30000))
        finally:
            stop(a)
        filled = len(rd.keys("rrc:[0-9a-f]*"))  # values, not locks
        b = start()
        try:
            out["L2 hit (cold L1, warm Redis)"] = measure(
                b, lambda: dnsperf(b.port, names, once=True))
            out["L1 hit (same names again)"] = measure(
                b, lambda: dnsperf(b.port, names, once=True))
            out["miss with Redis (GET + lock + upstream + SET)"] = measure(
                b, lambda: dnsperf(b.port, fresh, once=True))
        finally:
            stop(b)
        c = start()
        try:
            out["L2 hit at 10,000 qps (latency)"] = measure(
                c, lambda: dnsperf(c.port, names, once=True, qps=10000, verbose=True))
        finally:
            stop(c)
    finally:
        rd.stop()
    for k, r in out.items():
        print(f"redis tier: {k}: {r['qps']:.0f} qps, {r['cpu_us_per_q']:.2f} us/q, "
              f"avg {r['avg_lat'] * 1000:.3f} ms", flush=True)
    return {"names": n, "filled": filled, "runs": out}


def syscall_costs(work, quick):
    """Per-call cost of the system calls of one upstream query (bench/syscalls.c), pinned to
    the server's CPU: the floor a fresh socket per upstream query (CONFORMANCE U2) puts under
    every miss."""
    exe = os.path.join(work, "syscalls")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "syscalls.c")], check=True)
    out = subprocess.run(["taskset", "-c", SERVER_CPU, exe, "20000" if quick else "100000"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    costs = {k: float(v) for k, v in (line.split() for line in out.splitlines())}
    print("system calls (us): " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()),
          flush=True)
    return costs


def med(xs):
    return statistics.median(xs) if xs else 0.0


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0][:80]
    except Exception:
        return "?"


def report(results, rss, names, args, rounds, secs, miss_n, budget=None, sc=None, l2=None):
    base = "dnsdist" if "dnsdist" in names else names[0]

    def ratio(v, b):
        return f"{v / b:.2f}" if b else "-"
    lines = [f"# rrcache benchmark — {datetime.date.today().isoformat()}", "",
             f"Machine: {platform.node()}, {os.cpu_count()} CPUs, "
             f"{platform.processor() or platform.machine()}, kernel {platform.release()}. "
             f"Server pinned to CPU {SERVER_CPU}, dnsperf to CPU {CLIENT_CPU}. "
             f"{rounds} round(s), {secs} s per timed run, {miss_n} unique names per MISS run, "
             "medians shown; (x) = ratio to " + base + " in the same run.", "",
             "Versions: " + "; ".join([
                 version([RRCACHE, "--version"]), version(["dnsdist", "--version"]),
                 version(["unbound", "-V"]), version(["dnsmasq", "--version"]),
                 version(["dnsperf", "-h"]).replace("Usage: ", "")]), "",
             "| server | HIT qps | HIT CPU us/q | MISS qps | MISS CPU us/q | MISS lost | "
             "MIX qps | MIX CPU us/q | LAT avg ms | LAT p99 ms | LAT CPU us/q | "
             "RSS B / new name | NOERROR % (MISS) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    b = {w: {k: med([r.get(k, 0.0) for r in results[base][w]]) for k in
             ("qps", "cpu_us_per_q", "avg_lat", "p99", "lost")}
         for w in ("HIT", "MISS", "MIX", "LAT") if results[base][w]}
    for n in names:
        m = {w: {k: med([r.get(k, 0.0) for r in results[n][w]]) for k in
                 ("qps", "cpu_us_per_q", "avg_lat", "p99", "lost")}
             for w in ("HIT", "MISS", "MIX", "LAT")}
        rs = med(rss[n])
        lines.append(
            f"| {n} | {m['HIT']['qps']:.0f} ({ratio(m['HIT']['qps'], b['HIT']['qps'])}) "
            f"| {m['HIT']['cpu_us_per_q']:.2f} "
            f"({ratio(m['HIT']['cpu_us_per_q'], b['HIT']['cpu_us_per_q'])}) "
            f"| {m['MISS']['qps']:.0f} ({ratio(m['MISS']['qps'], b['MISS']['qps'])}) "
            f"| {m['MISS']['cpu_us_per_q']:.2f} "
            f"({ratio(m['MISS']['cpu_us_per_q'], b['MISS']['cpu_us_per_q'])}) "
            f"| {m['MISS']['lost']:.0f} "
            f"| {m['MIX']['qps']:.0f} ({ratio(m['MIX']['qps'], b['MIX']['qps'])}) "
            f"| {m['MIX']['cpu_us_per_q']:.2f} "
            f"({ratio(m['MIX']['cpu_us_per_q'], b['MIX']['cpu_us_per_q'])}) "
            f"| {m['LAT']['avg_lat'] * 1000:.3f} "
            f"| {m['LAT']['p99'] * 1000:.3f} ({ratio(m['LAT']['p99'], b['LAT']['p99'])}) "
            f"| {m['LAT']['cpu_us_per_q']:.2f} "
            f"({ratio(m['LAT']['cpu_us_per_q'], b['LAT']['cpu_us_per_q'])}) "
            f"| {rs:.0f} | {med([r['noerror_pct'] for r in results[n]['MISS']]):.1f} |")
    lines += ["", "Workloads: HIT = 1,000 cached names at full speed; MISS = unique names "
              "under a wildcard, every query a miss; MIX = 90 % hot, 10 % unique; LAT = "
              "10,000 qps over the hot set, per-query latency from `dnsperf -v`. "
              "CPU us/q = server run time (all threads, schedstat) / answered queries. "
              "RSS per new name = RSS growth over the MISS run / names answered (the "
              "reflector and the relay cache nothing). The reflector answers every query "
              "itself; the relay forwards every query (HIT included) to the upstream.", ""]
    if base == "dnsdist" and "rrcache" in names:
        # Round by round, rrcache against dnsdist run minutes apart in the same round.
        rows = [("HIT CPU us/q", "HIT", "cpu_us_per_q"), ("MISS CPU us/q", "MISS", "cpu_us_per_q"),
                ("MISS qps", "MISS", "qps"), ("MIX CPU us/q", "MIX", "cpu_us_per_q"),
                ("LAT p99", "LAT", "p99"), ("LAT CPU us/q", "LAT", "cpu_us_per_q")]
        lines += ["rrcache / dnsdist, round by round (median, min-max over "
                  f"{rounds} round(s)):", "", "| figure | median | min | max |", "|---|---|---|---|"]
        for label, w, k in rows:
            rs_ = [a.get(k, 0.0) / d.get(k, 0.0) for a, d in
                   zip(results["rrcache"][w], results["dnsdist"][w]) if d.get(k, 0.0)]
            if rs_:
                lines.append(f"| {label} | {med(rs_):.2f} | {min(rs_):.2f} | {max(rs_):.2f} |")
        lines.append("")
    lines += ["Share of each server's CPU time spent in the kernel (system time / run time, "
              "from /proc/PID/task/*/stat):", "",
              "| server | HIT | MISS | MIX | LAT |", "|---|---|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(
            f"{med([r.get('sys_share', 0.0) for r in results[n][w]]) * 100:.0f} %"
            for w in ("HIT", "MISS", "MIX", "LAT")) + " |")
    lines.append("")
    if budget:
        lines += [f"Byte budget (`cache.size: 16MiB`, {budget['names']} unique names, "
                  f"{budget['answered']:.0f} answered): RSS {budget['end'] / 2**20:.1f} MiB "
                  f"after the flood, idle {budget['idle'] / 2**20:.1f} MiB, limit "
                  f"{budget['limit'] / 2**20:.1f} MiB (16 MiB + idle + 10 %): "
                  f"{'holds' if budget['ok'] else 'EXCEEDED'}.", ""]
    if sc:
        setup = sum(sc[k] for k in ("socket", "bind", "connect", "epoll_add", "close"))
        base_miss = b.get("MISS", {}).get("cpu_us_per_q", 0.0)
        lines += ["System calls on the server's CPU (`bench/syscalls.c`, us per call): " +
                  ", ".join(f"{k} {v:.2f}" for k, v in sc.items()) + ". "
                  f"A fresh upstream socket (socket, bind to a random port, connect, epoll "
                  f"add, close) costs {setup:.1f} us: per query in strict mode "
                  f"(`upstream.socket_reuse: 1`, {ratio(setup, base_miss)}x dnsdist's whole "
                  f"miss in this run), {setup / 256:.2f} us per query with the default pool "
                  "(a socket carries up to 256 queries).", ""]
        mine = med([r["cpu_us_per_q"] for r in results.get("rrcache", {}).get("MISS", [])])
        if "relay" in results and results["relay"]["MISS"]:
            floor = med([r["cpu_us_per_q"] for r in results["relay"]["MISS"]])
            lines += [f"Kernel floor of a miss: the relay (`bench/relay.c`: two datagrams in and "
                      f"two out per query, batched, one epoll_wait per wake-up, no work between) "
                      f"costs {floor:.2f} us per forwarded query" +
                      (f"; rrcache's miss {mine:.2f} us ({ratio(mine, floor)}x the floor)."
                       if mine else "."), ""]
    if l2:
        rv = version(["redis-server", "--version"]).split(" v=")[-1].split()[0]
        lines += [f"Redis tier (`--redis`, a fleet `key_secret`, redis-server {rv} on loopback, "
                  "on dnsperf's CPU; "
                  f"{l2['names']} unique names, {l2['filled']} keys filled by a first "
                  "instance, then read by fresh ones):", "",
                  "| run | qps | rrcache CPU us/q | avg latency ms | p99 ms | lost |",
                  "|---|---|---|---|---|---|"]
        for k, r in l2["runs"].items():
            p99 = f"{r['p99'] * 1000:.3f}" if "p99" in r else "-"
            lines.append(f"| {k} | {r['qps']:.0f} | {r['cpu_us_per_q']:.2f} | "
                         f"{r['avg_lat'] * 1000:.3f} | {p99} | {r['lost']:.0f} |")
        l2h = l2["runs"].get("L2 hit (cold L1, warm Redis)")
        l1h = l2["runs"].get("L1 hit (same names again)")
        if l2h and l1h and l1h["cpu_us_per_q"]:
            lines += ["", f"An L2 hit costs {ratio(l2h['cpu_us_per_q'], l1h['cpu_us_per_q'])}x "
                      f"an L1 hit in rrcache's CPU ({l2['filled']} of {l2['names']} names were "
                      "in Redis; the others were misses in the L2 run)."]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    # Sections written by other benchmarks (bench/instructions.py --policy) are kept.
    kept = ""
    if os.path.exists(args.out):
        old = open(args.out).read()
        i = old.find(KEPT_MARK)
        if i >= 0:
            kept = "\n" + old[i:]
    with open(args.out, "w") as f:
        f.write(text + kept)


if __name__ == "__main__":
    main()

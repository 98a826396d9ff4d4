#!/usr/bin/python3
"""How many rrcache instances one Redis node carries: the CPU a redis-server spends per
command of rrcache's own traffic, measured, and from it the commands a second one core
serves.

Knot serves the names; one redis-server is pinned to CPU 1; four rrcache instances (1 worker,
a 64 KiB L1 so that nearly every query reaches Redis) and dnsperf share CPU 0. First one
instance asks 20,000 new names once (each: GET that misses, SET NX of the lock, SET of the
value); then the four ask the same names over and over for --seconds (each: a GET that hits); last one instance asks them at 2,000 a second (a light load: few
commands share a read).
Redis's CPU is its threads' run time (/proc/PID/task/*/schedstat), its commands INFO's
total_commands_processed; also Redis's own usec_per_call (command execution alone).
Writes its section of bench/RESULTS.md.

Usage: bench/fleet.py [--seconds N] [--names N]
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
from helpers import Knot, Redis, free_port  # noqa: E402
from instructions import write_section  # noqa: E402


def info(rd, section):
    text = rd.cmd("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def redis_state(rd):
    st = info(rd, "stats")
    cs = info(rd, "commandstats")
    calls = {k[len("cmdstat_"):]: dict(kv.split("=") for kv in v.split(","))
             for k, v in cs.items()}
    return int(st["total_commands_processed"]), calls


def usec_per_call(before, after, cmd):
    b, a = before.get(cmd, {}), after.get(cmd, {})
    n = int(a.get("calls", 0)) - int(b.get("calls", 0))
    us = float(a.get("usec", 0)) - float(b.get("usec", 0))
    return us / n if n else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--names", type=int, default=20000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rrc-bench-fleet-")
    knot = Knot(extra_zone=B.zone_extra())
    rd = Redis(extra=["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"])
    subprocess.run(["taskset", "-pc", B.SERVER_CPU, str(rd.proc.pid)], capture_output=True)
    names = os.path.join(work, "names.txt")
    B.write_names(names, [f"f{i}.u.example.test." for i in range(args.names)])
    conf = os.path.join(work, "fleet.yaml")
    with open(conf, "w") as f:
        f.write('redis:\n  key_secret: "bench fleet"\n  timeout: 200ms\n')
    procs, ports = [], []
    try:
        for _ in range(4):
            port = free_port()
            a = B.rrcache_args(port, knot.port, cache_size="64KiB", redis_url=rd.url)
            procs.append(subprocess.Popen(["taskset", "-c", B.CLIENT_CPU] + a + ["-c", conf],
                                          stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            B.wait_port(port, procs[-1])
            ports.append(port)
        time.sleep(0.5)
        rows = []
        for phase in ("fill", "hits", "light"):
            n0, c0 = redis_state(rd)
            t0 = B.schedstat_ns(rd.proc.pid)
            w0 = time.monotonic()
            if phase == "fill":
                B.dnsperf(ports[0], names, once=True, outstanding=50)
            elif phase == "light":
                B.dnsperf(ports[0], names, seconds=args.seconds, qps=2000, outstanding=20)
            else:
                runs = [subprocess.Popen(["taskset", "-c", B.CLIENT_CPU, "dnsperf", "-s",
                                          "127.0.0.1", "-p", str(p), "-d", names, "-l",
                                          str(args.seconds), "-c", "4", "-q", "100"],
                                         stdout=subprocess.DEVNULL) for p in ports]
                for r in runs:
                    r.wait(args.seconds + 60)
            wall = time.monotonic() - w0
            t1 = B.schedstat_ns(rd.proc.pid)
            n1, c1 = redis_state(rd)
            cmds = n1 - n0
            cpu_us = (t1 - t0) / 1000.0
            per = cpu_us / max(cmds, 1)
            rows.append((phase, cmds, cmds / wall, cpu_us / 1e6 / wall, per,
                         usec_per_call(c0, c1, "get"), usec_per_call(c0, c1, "set")))
            print(f"{phase}: {cmds} commands, {cmds / wall:,.0f}/s, Redis CPU "
                  f"{100 * cpu_us / 1e6 / wall:.0f} %, {per:.2f} us per command "
                  f"(GET {rows[-1][5]:.2f} us, SET {rows[-1][6]:.2f} us of execution)",
                  flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        rd.stop()
        knot.stop()
    fill, hits, light = rows
    cap_hits = 1e6 / hits[4]
    cap_fill = 1e6 / fill[4]
    cap_light = 1e6 / light[4]
    version = subprocess.run(["redis-server", "--version"], capture_output=True,
                             text=True).stdout.split()[2]
    head = "## One Redis node under a fleet (bench/fleet.py)"
    body = (f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; redis-server {version} "
            f"pinned to CPU {B.SERVER_CPU}; 4 rrcache instances (1 worker, 64 KiB L1) and "
            f"dnsperf on CPU {B.CLIENT_CPU}; {args.names:,} names. Redis CPU per command: "
            "its run time over the commands it processed (network and parsing included); "
            "execution: its own usec_per_call.\n\n"
            "| phase | commands | commands/s | Redis CPU | us per command | GET execution us "
            "| SET execution us |\n|---|---|---|---|---|---|---|\n" +
            "\n".join(f"| {p} | {c:,} | {r:,.0f} | {100 * u:.0f} % | {per:.2f} | {g:.2f} | "
                      f"{s_:.2f} |" for p, c, r, u, per, g, s_ in rows) +
            f"\n\nAt these costs one core of Redis serves about {cap_hits:,.0f} of rrcache's "
            f"GETs a second when many arrive together (hits), {cap_fill:,.0f} commands a "
            f"second of fills (GET, SET NX, SET), and {cap_light:,.0f} a second at the "
            f"light load's cost (one instance at 2,000 queries a second: few commands per "
            f"read, the dearest case).\n")
    print(body)
    write_section(head, body)


if __name__ == "__main__":
    main()

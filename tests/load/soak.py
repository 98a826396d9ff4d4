#!/usr/bin/python3
"""Load and soak: rrcache at 80 % of the full-load rate this machine's load generator reaches,
with a MIX workload (90 % of queries for 1,000 cached names, 10 % unique names: misses), two
Knot upstreams, one of them restarted halfway through. Reports, and checks:

- answers lost outside the restart's window (none may be: the other upstream answers);
- the slope of rrcache's RSS over the second half (flat once the cache is full; the cache is
  kept small, 2 MiB, so that it fills early);
- open file descriptors at the start and at the end (no growth);
- SERVFAIL answers.

    /usr/bin/python3 tests/load/soak.py [--seconds 600]      (the default run: 10 minutes)

The end-to-end suite runs it for 60 s (tests/e2e/test_soak.py).
"""
import argparse
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import dns.message  # noqa: E402
import dns.rcode  # noqa: E402

from helpers import Knot, Rrcache, rss_kib  # noqa: E402

HOT = [f"n{i}.example.test." for i in range(1000)]


class Generator:
    """Sends queries at a rate from one UDP socket and matches the answers by ID."""

    def __init__(self, port):
        self.addr = ("127.0.0.1", port)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # as root: past net.core.rmem_max, so the generator itself drops nothing
            self.s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.s.setblocking(False)
        self.next_id = 0
        self.unique = 0
        self.wires = {}
        self.pending = {}  # id -> send time
        self.sent = self.answered = self.servfail = 0
        self.lost_at = []  # send times of queries that got no answer within 2 s

    def _wire(self, i):
        if i % 10 == 9:
            self.unique += 1
            return dns.message.make_query(f"u{self.unique}.wild.example.test.", "A").to_wire()
        name = HOT[(i * 7919) % len(HOT)]
        w = self.wires.get(name)
        if w is None:
            w = self.wires[name] = dns.message.make_query(name, "A").to_wire()
        return w

    def send_one(self, now):
        qid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFF
        if qid in self.pending:
            self.lost_at.append(self.pending.pop(qid))  # its ID comes round again
        w = bytearray(self._wire(self.sent))
        w[0], w[1] = qid >> 8, qid & 0xFF
        try:
            self.s.sendto(w, self.addr)
        except BlockingIOError:
            self.lost_at.append(now)
            return
        self.pending[qid] = now
        self.sent += 1

    def receive(self, now):
        while True:
            try:
                data = self.s.recv(4096)
            except BlockingIOError:
                break
            if len(data) < 4:
                continue
            qid = data[0] << 8 | data[1]
            if self.pending.pop(qid, None) is not None:
                self.answered += 1
                if data[3] & 0x0F == dns.rcode.SERVFAIL:
                    self.servfail += 1
        for qid, t in list(self.pending.items()):
            if now - t > 2.0:
                self.lost_at.append(t)
                del self.pending[qid]

    def run(self, seconds, rate=None, window=200, tick=None):
        """Sends for seconds at rate per second (None: as fast as the window of outstanding
        queries allows); tick(now) is called about once a second."""
        start = time.monotonic()
        last_tick = start
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            if rate:
                due = int((now - start) * rate) - (self.sent + len(self.lost_at))
                for _ in range(max(0, min(due, 128))):
                    self.send_one(now)
            else:
                while len(self.pending) < window:
                    self.send_one(now)
            self.receive(now)
            if tick and now - last_tick >= 1.0:
                last_tick = now
                tick(now)
            time.sleep(0.0005)
        end = time.monotonic() + 2.5
        while self.pending and time.monotonic() < end:
            self.receive(time.monotonic())
            time.sleep(0.01)
        self.receive(time.monotonic() + 10)  # what is still missing is lost


def udp_rcvbuf_errors():
    """The kernel's count of datagrams dropped for a full socket buffer (all sockets)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def slope_kib_per_min(samples):
    """Least-squares slope of (t, kib) samples, in KiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    num = sum((t - mt) * (v - mv) for t, v in samples)
    den = sum((t - mt) ** 2 for t, _ in samples) or 1.0
    return num / den * 60


def soak(seconds):
    knots = [Knot(), Knot()]
    r = None
    try:
        r = Rrcache([f"127.0.0.1:{k.port}" for k in knots], workers=1,
                    config_extra="cache:\n  size: 2MiB\n")
        pid = r.proc.pid
        fds = lambda: len(os.listdir(f"/proc/{pid}/fd"))  # noqa: E731
        # Warm the hot names, then find the generator's full-load rate.
        warm = Generator(r.port)
        warm.run(3.0)
        full = Generator(r.port)
        full.run(3.0)
        full_rate = full.answered / 3.0
        rate = 0.8 * full_rate
        gen = Generator(r.port)
        t0 = time.monotonic()
        restart = {"at": None}
        rss, fd_samples = [], []

        def tick(now):
            rss.append((now - t0, rss_kib(pid)))
            fd_samples.append(fds())
            if restart["at"] is None and now - t0 >= seconds / 2:
                restart["at"] = now
                knots[1].kill()
                time.sleep(0.2)
                knots[1].restart()
                restart["back"] = time.monotonic()
        drops0 = udp_rcvbuf_errors()
        fds_before = fds()  # idle, before and after: in-flight upstream sockets are not leaks
        gen.run(seconds, rate=rate, tick=tick)
        drops = udp_rcvbuf_errors() - drops0
        # Idle again: the pooled upstream sockets (CONFORMANCE U2) close once their lifetime
        # (10 s) is over; what stays open after that is what a leak would show.
        key = ("rrcache_upstream_sockets", frozenset())
        settle = time.monotonic() + 15
        time.sleep(1.0)
        while r.metrics().get(key, 0) > 0 and time.monotonic() < settle:
            time.sleep(0.5)
        time.sleep(1.0)  # and the statistics connection just used has closed
        fds_after = fds()
        window = (restart["at"] - 2.5, restart.get("back", restart["at"]) + 2.5) \
            if restart["at"] else (0, 0)
        lost_outside = [t for t in gen.lost_at if not window[0] <= t <= window[1]]
        second_half = [(t, v) for t, v in rss if t >= seconds / 2]
        report = {
            "seconds": seconds,
            "full_load_qps": round(full_rate),
            "target_qps": round(rate),
            "achieved_qps": round(gen.sent / seconds),
            "sent": gen.sent,
            "answered": gen.answered,
            "servfail": gen.servfail,
            "lost": len(gen.lost_at),
            "lost_outside_restart": len(lost_outside),
            "udp_rcvbuf_drops": drops,
            "rss_kib_start": rss[0][1] if rss else 0,
            "rss_kib_end": rss[-1][1] if rss else 0,
            "rss_slope_kib_per_min_second_half": round(slope_kib_per_min(second_half), 1),
            "fds_idle_before": fds_before,
            "fds_idle_after": fds_after,
            "fds_max_under_load": max(fd_samples) if fd_samples else 0,
        }
        r.stop()
        return report
    finally:
        if r:
            r.stop(check=False)
        for k in knots:
            k.stop()


def check(report):
    """The soak's pass conditions; returns the list of what failed."""
    bad = []
    if report["lost_outside_restart"] > report["sent"] * 0.001:
        bad.append("answers lost outside the upstream restart")
    if report["servfail"] > report["sent"] * 0.001:
        bad.append("SERVFAIL answers")
    if abs(report["rss_slope_kib_per_min_second_half"]) > 1024:
        bad.append("RSS not flat over the second half")
    if report["fds_idle_after"] > report["fds_idle_before"]:
        bad.append("open descriptors grew")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    args = ap.parse_args()
    report = soak(args.seconds)
    print(json.dumps(report, indent=2))
    bad = check(report)
    if bad:
        print("FAILED: " + "; ".join(bad))
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

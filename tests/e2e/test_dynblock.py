"""Dynamic blocks through the real binary: an NXDOMAIN flood and a miss flood each block their
client's prefix (and only it), the block is listed, counted, logged and ends on time; the
actions; blocks added and removed through the API with the token; exempt networks; a reload
keeps the blocks; max_blocks holds. Clients are told apart by their 127.x source address."""
import json
import socket
import time
import uuid

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from helpers import metric, wait_for

TOKEN = "blocks-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def conf(nx=0, miss=0, window="1s", duration="60s", action="drop", extra=""):
    return f"""dynblock:
  nxdomain_rate: {nx}
  miss_rate: {miss}
  window: {window}
  duration: {duration}
  action: {action}
{extra}acl:
  allow: [127.0.0.0/8]
"""


def start(fault, rrcache, **kw):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf(**kw),
                stats_extra=f'  token: "{TOKEN}"\n')
    return up, r


def ask(r, source, name, tcp=False, timeout=2.0):
    """The answer to name asked from source, or None when none came within timeout."""
    q = dns.message.make_query(name, "A")
    try:
        if tcp:
            return dns.query.tcp(q, r.host, port=r.port, timeout=timeout, source=source)
        return dns.query.udp(q, r.host, port=r.port, timeout=timeout, source=source)
    except (dns.exception.Timeout, socket.timeout, ConnectionError, EOFError):
        return None


def flood(r, source, prefix, n):
    """n distinct names from source, one after the other (each a miss); the answers."""
    return [ask(r, source, f"{prefix}{uuid.uuid4().hex[:10]}.flood.test.", timeout=0.5)
            for _ in range(n)]


def blocks(r):
    status, _, body = r.http("/api/v1/blocks")
    assert status == 200
    return json.loads(body)


def test_nxdomain_flood_blocks_the_prefix_until_it_ends(fault, rrcache):
    """10 NXDOMAIN answers a second over a 2 s window: the client's /24 is blocked (REFUSED)
    for 3 s, a neighbour in the /24 too, another /24 not; listed, counted, logged; then it
    ends and the prefix is answered again."""
    up, r = start(fault, rrcache, nx=10, window="2s", duration="3s", action="refused")
    answers = flood(r, "127.0.6.2", "nx", 20)
    assert all(a is not None and a.rcode() == dns.rcode.NXDOMAIN for a in answers)
    t0 = time.monotonic()
    # The 20th answer started the block: the next query of the /24 is refused, not asked.
    asked = len(up.seen)
    a = ask(r, "127.0.6.9", "www.example.test.")
    assert a is not None and a.rcode() == dns.rcode.REFUSED
    a = ask(r, "127.0.6.2", "nxagain.flood.test.", tcp=True)
    assert a is not None and a.rcode() == dns.rcode.REFUSED
    assert len(up.seen) == asked
    assert ask(r, "127.0.7.1", "www.example.test.").rcode() == dns.rcode.NOERROR
    listed = blocks(r)
    assert listed["active"] == 1
    b = listed["blocks"][0]
    assert b["prefix"] == "127.0.6.0/24" and b["reason"] == "nxdomain"
    assert b["rate"] >= 10 and b["queries"] == 2 and 0 < b["seconds_left"] <= 3
    assert b["since"].endswith("Z") and b["until"] > b["since"]
    assert metric(r, "rrcache_dynblock_started_total", reason="nxdomain") == 1
    assert metric(r, "rrcache_dynblock_active") == 1
    assert metric(r, "rrcache_dynblock_queries_total", action="refused") == 2
    assert "dynamic block of 127.0.6.0/24 for 3 s:" in r.log()
    assert "NXDOMAIN answers a second over the last 2 s" in r.log()
    # It ends 3 s after it started.
    assert wait_for(lambda: ask(r, "127.0.6.9", "www.example.test.", timeout=0.5) is not None
                    and ask(r, "127.0.6.9", "www.example.test.").rcode() == dns.rcode.NOERROR,
                    deadline=6)
    assert time.monotonic() - t0 >= 2.5
    assert blocks(r) == {"active": 0, "blocks": []}
    assert metric(r, "rrcache_dynblock_active") == 0


def test_below_the_rate_nothing_happens(fault, rrcache):
    """A client under the rate (10 NXDOMAIN a second against 20, for 2.5 s) stays answered."""
    up, r = start(fault, rrcache, nx=20, action="refused")
    end = time.monotonic() + 2.5
    n = 0
    while time.monotonic() < end:
        a = ask(r, "127.0.6.3", f"nx{n}.slow.test.")
        assert a is not None and a.rcode() == dns.rcode.NXDOMAIN
        n += 1
        time.sleep(0.1)
    assert n >= 15
    assert blocks(r)["active"] == 0
    assert metric(r, "rrcache_dynblock_started_total", reason="nxdomain") == 0


def test_miss_flood_with_tc(fault, rrcache):
    """15 misses a second over 2 s: blocked with the tc action, UDP gets TC=1 and TCP is answered (a
    real client behind the prefix still resolves); cache hits do not count; the block is
    removed through the API with the token, and the prefix is answered over UDP again."""
    up, r = start(fault, rrcache, miss=15, window="2s", action="tc")
    # Hits of one name do not count, however many.
    assert ask(r, "127.0.8.2", "hit.test.").rcode() == dns.rcode.NOERROR
    for _ in range(100):
        assert ask(r, "127.0.8.2", "hit.test.").rcode() == dns.rcode.NOERROR
    assert blocks(r)["active"] == 0
    # Distinct names until the answer is TC=1: the 30th miss within 2 s (the first
    # hit.test. was one) starts the block, the next query finds it.
    answers = []
    for i in range(60):
        answers.append(ask(r, "127.0.8.2", f"m{i}.flood.test."))
        if answers[-1].flags & dns.flags.TC:
            break
    assert answers[-1].flags & dns.flags.TC and not answers[-1].answer
    assert all(a.rcode() == dns.rcode.NOERROR and a.answer for a in answers[:-1])
    assert 29 <= len(answers) - 1 <= 31, len(answers)
    listed = blocks(r)["blocks"]
    assert [(b["prefix"], b["reason"]) for b in listed] == [("127.0.8.0/24", "miss")]
    a = ask(r, "127.0.8.7", "hit.test.")
    assert a.flags & dns.flags.TC and not a.answer
    t = ask(r, "127.0.8.7", "hit.test.", tcp=True)
    assert t.rcode() == dns.rcode.NOERROR and t.answer and not t.flags & dns.flags.TC
    assert metric(r, "rrcache_dynblock_queries_total", action="truncated") == 2
    # Removal needs the token, and names the prefix exactly.
    q = "/api/v1/blocks?prefix=127.0.8.0/24"
    assert r.http(q, method="DELETE")[0] == 401
    assert r.http(q, method="DELETE", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert r.http("/api/v1/blocks?prefix=127.0.8.0/25", method="DELETE", headers=AUTH)[0] == 404
    status, _, body = r.http(q, method="DELETE", headers=AUTH)
    assert status == 200 and json.loads(body) == {"removed": 1}
    assert r.http(q, method="DELETE", headers=AUTH)[0] == 404
    a = ask(r, "127.0.8.7", "hit.test.")
    assert a.rcode() == dns.rcode.NOERROR and a.answer and not a.flags & dns.flags.TC
    assert metric(r, "rrcache_dynblock_removed_total") == 1
    assert "dynamic block of 127.0.8.0/24 removed through the API" in r.log()


def test_blocks_by_hand_reload_and_limits(fault, rrcache):
    """A block added through the API drops the prefix's queries (UDP and TCP), survives a
    reload, is listed as manual; bad requests are refused; max_blocks holds; all=1 ends
    every block."""
    up, r = start(fault, rrcache, extra="  max_blocks: 2\n")
    post = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    assert r.http("/api/v1/blocks", "POST", body="prefix=127.0.10.0/24")[0] == 401
    for bad in ("prefix=127.0.10.1/24", "prefix=300.0.0.0/8", "prefix=127.0.10.0/24&duration=0s",
                "prefix=127.0.10.0/24&duration=2d", "", "all=1"):
        assert r.http("/api/v1/blocks", "POST", body=bad, headers=post)[0] == 400, bad
    status, _, body = r.http("/api/v1/blocks", "POST", body="prefix=127.0.10.0/24&duration=10m",
                             headers=post)
    assert status == 200
    assert json.loads(body) == {"blocked": "127.0.10.0/24", "seconds": 600, "new": True}
    assert ask(r, "127.0.10.5", "www.example.test.", timeout=0.5) is None
    assert ask(r, "127.0.10.5", "www.example.test.", tcp=True, timeout=0.5) is None
    assert ask(r, "127.0.11.5", "www.example.test.").rcode() == dns.rcode.NOERROR
    b = blocks(r)["blocks"][0]
    assert (b["prefix"], b["reason"], b["rate"]) == ("127.0.10.0/24", "manual", 0)
    assert 590 < b["seconds_left"] <= 600 and b["queries"] == 2
    r.hup()
    assert wait_for(lambda: "configuration reloaded" in r.log())
    assert ask(r, "127.0.10.5", "www.example.test.", timeout=0.5) is None
    # A host, and an IPv6 network; a third block finds max_blocks (2) in force.
    assert r.http("/api/v1/blocks", "POST", body="prefix=127.0.12.1", headers=post)[0] == 200
    assert ask(r, "127.0.12.1", "www.example.test.", timeout=0.5) is None
    assert ask(r, "127.0.12.2", "www.example.test.").rcode() == dns.rcode.NOERROR
    status, _, body = r.http("/api/v1/blocks", "POST", body="prefix=2001:db8::/32",
                             headers=post)
    assert status == 503 and b"max_blocks" in body
    assert metric(r, "rrcache_dynblock_refused_total") == 1
    assert metric(r, "rrcache_dynblock_started_total", reason="manual") == 2
    assert metric(r, "rrcache_dynblock_queries_total", action="dropped") == 4
    assert r.http("/api/v1/blocks", "DELETE", headers=AUTH)[0] == 400
    status, _, body = r.http("/api/v1/blocks?all=1", "DELETE", headers=AUTH)
    assert status == 200 and json.loads(body) == {"removed": 2}
    assert ask(r, "127.0.10.5", "www.example.test.").rcode() == dns.rcode.NOERROR
    assert r.http("/api/v1/top/reset", "DELETE", headers=AUTH)[0] == 405


def test_exempt_networks_are_not_watched(fault, rrcache):
    """ratelimit.exempt networks are never blocked, however many NXDOMAIN answers they get."""
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=conf(nx=5, window="2s") + "ratelimit:\n  exempt: [127.0.13.0/24]\n",
                stats_extra=f'  token: "{TOKEN}"\n')
    answers = flood(r, "127.0.13.2", "nx", 40)
    assert all(a is not None and a.rcode() == dns.rcode.NXDOMAIN for a in answers)
    assert blocks(r)["active"] == 0
    flood(r, "127.0.14.2", "nx", 10)
    assert [b["prefix"] for b in blocks(r)["blocks"]] == ["127.0.14.0/24"]

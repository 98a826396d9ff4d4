"""The pool of upstream UDP sockets (CONFORMANCE U2, docs/protocol.md): several sockets per
upstream and worker, each query on a random one with an ID no other query in flight on it has,
a socket retired after upstream.socket_reuse queries or upstream.socket_lifetime; strict mode
(socket_reuse: 1) gives every query its own socket. Spoofed replies, also those aimed at
another query's open port, are ignored and counted.

The upstream here is helpers.PacedUpstream: it answers each query after a delay, so that many
are in flight at once, and records when each query came, when it was answered, its source port
and its ID.
"""
import collections
import socket
import time

import dns.message
import dns.rrset

from helpers import blast, default_answer

REUSE = 256


def sockets_seen(entries):
    """Splits each source port's queries into the sockets that had it. A port can be bound
    again only once its earlier socket closed, which needs every query on it answered: a new
    socket is assumed only where the count would pass REUSE and nothing was in flight on the
    port. Returns [(port, [entries])]; fails on a socket that carried more than REUSE."""
    by_port = collections.defaultdict(list)
    for e in sorted(entries):
        by_port[e[2]].append(e)
    out = []
    for port, es in by_port.items():
        cur, answered_by = [], 0.0
        for e in es:
            if len(cur) == REUSE:
                assert e[0] >= answered_by, (
                    f"port {port} carried a query past {REUSE} with queries in flight")
                out.append((port, cur))
                cur = []
            cur.append(e)
            answered_by = max(answered_by, e[1])
        out.append((port, cur))
    return out


def most_open_at_once(socks):
    """The largest number of sockets open at one moment (first query to last answer)."""
    events = []
    for _, es in socks:
        events.append((min(e[0] for e in es), 1))
        events.append((max(e[1] for e in es), -1))
    n = best = 0
    for _, d in sorted(events):
        n += d
        best = max(best, n)
    return best


def ids_in_flight_unique(entries):
    """True when no two queries in flight at once on one port had one ID."""
    events = []
    for recv, ans, port, qid, _ in entries:
        events.append((recv, 1, port, qid))
        events.append((ans, -1, port, qid))
    live = collections.Counter()
    # At equal times an answer is sent before the next query is read.
    for _, d, port, qid in sorted(events, key=lambda x: (x[0], x[1])):
        live[port, qid] += d
        if live[port, qid] > 1:
            return False
    return True


def test_pool_spreads_misses_over_bounded_random_sockets(paced, rrcache):
    """2,000 misses with the defaults: at least 8 sockets open at once on the one worker, none
    carrying more than 256 queries, no ID twice in flight on one port, ports not sequential."""
    up = paced(delay=0.02, jitter=0.03)
    r = rrcache([f"127.0.0.1:{up.port}"])
    names = [f"pool{i}.test." for i in range(2000)]
    got = blast(r.port, names, window=100)
    assert len(got) == 2000
    assert all(m.answer[0][0].address == "192.0.2.7" for m in got.values())
    entries = up.entries()
    assert len(entries) == 2000
    socks = sockets_seen(entries)
    assert most_open_at_once(socks) >= 8
    assert ids_in_flight_unique(entries)
    # 2,000 queries on 256-query sockets: at least 8 sockets, and far fewer than queries.
    assert 8 <= len(socks) <= 2000 // 16
    # Not sequential: ports in the order they first appeared take steps of all sizes.
    first = []
    for e in sorted(entries):
        if e[2] not in first:
            first.append(e[2])
    steps = [(b - a) & 0xFFFF for a, b in zip(first, first[1:])]
    assert len(set(steps)) >= 0.9 * len(steps)
    assert max(first) - min(first) > 10000
    m = r.metrics()
    assert m[("rrcache_upstream_sockets_opened_total", frozenset())] == len(socks)
    assert m[("rrcache_unwanted_replies_total", frozenset())] == 0


def test_strict_mode_gives_every_query_its_own_socket(paced, rrcache):
    """socket_reuse: 1: with 50 queries in flight at once, never two on one port."""
    up = paced(delay=0.02, jitter=0.03)
    r = rrcache([f"127.0.0.1:{up.port}"], upstream_extra="  socket_reuse: 1")
    names = [f"strict{i}.test." for i in range(300)]
    got = blast(r.port, names, window=50)
    assert len(got) == 300
    entries = up.entries()
    assert len(entries) == 300
    events = []
    for recv, ans, port, _, _ in entries:
        events.append((recv, 1, port))
        events.append((ans, -1, port))
    live = collections.Counter()
    most = 0
    for _, d, port in sorted(events, key=lambda x: (x[0], x[1])):
        live[port] += d
        assert live[port] <= 1, f"two queries in flight on port {port}"
        most = max(most, sum(1 for v in live.values() if v))
    assert most >= 20  # many in flight at once, each on its own port
    # A port is bound again only by chance (300 among 64,512).
    assert len({e[2] for e in entries}) >= 290
    m = r.metrics()
    assert m[("rrcache_upstream_sockets_opened_total", frozenset())] == 300


def test_spoofed_replies_on_pooled_sockets_are_ignored(paced, rrcache):
    """While the real answer to victim.test is delayed, four lies arrive: the right ID and
    question from another source port (the connected socket's kernel drops it), the right
    ID and question from the server's own address to another query's open port, another ID
    on the right port, the right port and ID with another question. The client gets the real
    answer; the three that reach rrcache are counted as unwanted."""
    up = paced(delay=0.3)
    r = rrcache([f"127.0.0.1:{up.port}"])
    # Open several sockets of the pool first, so that other ports are open.
    warm = blast(r.port, [f"warm{i}.test." for i in range(40)], window=40)
    assert len(warm) == 40
    open_ports = {e[2] for e in up.entries()}
    assert len(open_ports) >= 4
    sent = []

    def lie_for(q, rrtype="A", name=None):
        m = dns.message.make_query(name or q.question[0].name, rrtype)
        m.id = q.id
        m = default_answer(m)
        m.answer = [dns.rrset.from_text(m.question[0].name, 300, "IN", "A", "6.6.6.6")]
        return m.to_wire()

    def hook(q, src):
        if q.question[0].name.to_text() != "victim.test.":
            return
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            other.sendto(lie_for(q), src)  # wrong source port
        finally:
            other.close()
        port2 = next(p for p in sorted(open_ports) if p != src[1])
        up.sock.sendto(lie_for(q), ("127.0.0.1", port2))  # another query's port
        wrong_id = dns.message.from_wire(lie_for(q))
        wrong_id.id = (q.id + 1) & 0xFFFF
        up.sock.sendto(wrong_id.to_wire(), src)
        up.sock.sendto(lie_for(q, name="other.test."), src)  # right ID, other question
        sent.append(src[1])
    up.spoof(hook)
    before = r.metrics()[("rrcache_unwanted_replies_total", frozenset())]
    resp = r.query("victim.test.", timeout=3)
    assert resp.answer[0][0].address == "192.0.2.7"
    assert len(sent) == 1
    # The answer came after the lies on the same port; the one aimed at another port was
    # sent first of those.
    after = r.metrics()[("rrcache_unwanted_replies_total", frozenset())]
    assert after - before == 3
    # Nothing was cached from a lie.
    assert r.query("other.test.", timeout=3).answer[0][0].address == "192.0.2.7"


def test_retired_socket_still_delivers_its_replies(paced, rrcache):
    """Sockets live 100 ms here; answers take 500 ms. Queries sent before the sockets' end are
    answered through them; queries after it leave on new ports."""
    up = paced(delay=0.5)
    r = rrcache([f"127.0.0.1:{up.port}"], upstream_extra="  socket_lifetime: 100ms")
    first = [f"early{i}.test." for i in range(20)]
    later = [f"late{i}.test." for i in range(20)]
    import threading
    results = {}

    def run(names, key):
        results[key] = blast(r.port, names, window=20, deadline=10)
    t = threading.Thread(target=run, args=(first, "first"))
    t.start()
    time.sleep(0.25)
    run(later, "later")
    t.join(15)
    assert len(results["first"]) == 20 and len(results["later"]) == 20
    assert all(m.answer[0][0].address == "192.0.2.7" for m in results["first"].values())
    entries = up.entries()
    early_ports = {e[2] for e in entries if e[4].to_text().startswith("early")}
    late_ports = {e[2] for e in entries if e[4].to_text().startswith("late")}
    assert early_ports and late_ports and not early_ports & late_ports
    m = r.metrics()
    assert m[("rrcache_unwanted_replies_total", frozenset())] == 0
    # The sweep closes what is retired and idle.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if r.metrics()[("rrcache_upstream_sockets", frozenset())] == 0:
            break
        time.sleep(0.1)
    assert r.metrics()[("rrcache_upstream_sockets", frozenset())] == 0

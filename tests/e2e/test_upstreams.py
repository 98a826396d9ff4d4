"""Upstream handling: balancing, failover, health, TC fallback, spoofing, randomness and
coalescing (docs/protocol.md U1-U6)."""
import concurrent.futures
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rrset
import pytest

from helpers import default_answer, query


def test_round_robin_over_three(fault, rrcache):
    ups = [fault() for _ in range(3)]
    r = rrcache([f"127.0.0.1:{u.port}" for u in ups])
    for i in range(60):
        assert r.query(f"rr{i}.test.").rcode() == dns.rcode.NOERROR
    counts = [u.count() for u in ups]
    assert sum(counts) >= 60
    for c in counts:
        assert 18 <= c <= 24, counts


def test_one_silent_upstream_of_three(fault, rrcache):
    silent = fault(lambda q, t: None)
    good = [fault(), fault()]
    r = rrcache([f"127.0.0.1:{silent.port}"] + [f"127.0.0.1:{g.port}" for g in good],
                upstream_extra="  probe_interval: 30s")

    def ask(i):
        t0 = time.monotonic()
        resp = query("127.0.0.1", r.port, f"silent{i}.test.", timeout=5)
        return resp.rcode(), time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(ask, range(30)))
    for rcode, took in results:
        assert rcode == dns.rcode.NOERROR
        assert took < 2.5
    # Until its first timeouts it gets its share; after 3 it is marked down and no longer
    # asked (probes are 30 s away).
    asked = silent.count()
    assert asked <= 15
    for i in range(30):
        t0 = time.monotonic()
        assert r.query(f"later{i}.test.").rcode() == dns.rcode.NOERROR
        assert time.monotonic() - t0 < 0.5
    assert silent.count() == asked


def test_all_down_servfail_within_budget(fault, rrcache):
    ups = [fault(lambda q, t: None) for _ in range(2)]
    r = rrcache([f"127.0.0.1:{u.port}" for u in ups],
                upstream_extra="  probe_interval: 30s")
    t0 = time.monotonic()
    resp = r.query("down.test.", timeout=5)
    took = time.monotonic() - t0
    assert resp.rcode() == dns.rcode.SERVFAIL
    assert took < 2.5, took
    # Once every upstream is marked down, SERVFAIL comes at once.
    for i in range(4):
        r.query(f"down{i}.test.", timeout=5)
    t0 = time.monotonic()
    assert r.query("fast.test.", timeout=5).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t0 < 0.5


def test_down_upstream_comes_back(fault, rrcache):
    state = {"silent": True}

    def handler(q, t):
        return None if state["silent"] else default_answer(q)
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"],
                upstream_extra="  probe_interval: 200ms\n  timeout: 200ms\n"
                               "  client_timeout: 400ms")
    for i in range(4):
        r.query(f"gone{i}.test.", timeout=3)
    assert r.query("gone.test.", timeout=3).rcode() == dns.rcode.SERVFAIL
    state["silent"] = False
    time.sleep(1.0)  # two good probes
    assert r.query("back.test.", timeout=3).rcode() == dns.rcode.NOERROR
    assert "up again" in r.log()


def test_refused_connection_fails_over_fast(fault, rrcache):
    """An upstream port with nothing on it (ICMP unreachable) is skipped without waiting."""
    from helpers import free_port
    good = fault()
    r = rrcache([f"127.0.0.1:{free_port()}", f"127.0.0.1:{good.port}"])
    for i in range(6):
        t0 = time.monotonic()
        assert r.query(f"refused{i}.test.").rcode() == dns.rcode.NOERROR
        assert time.monotonic() - t0 < 0.5


def test_tc_fallback_to_tcp(fault, rrcache):
    def handler(q, transport):
        resp = default_answer(q)
        if transport == "udp":
            resp.answer = []
            resp.flags |= dns.flags.TC
        return resp
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    resp = r.query("trunc.test.")
    assert resp.rcode() == dns.rcode.NOERROR
    assert not resp.flags & dns.flags.TC
    assert resp.answer[0][0].address == "192.0.2.7"
    transports = [s.transport for s in up.seen]
    assert transports == ["udp", "tcp"]
    # The full answer was cached, not the truncated one.
    r.query("trunc.test.")
    assert len(up.seen) == 2


def test_tc_big_answer_from_knot(knot, rrcache):
    r = rrcache([f"127.0.0.1:{knot.port}"])
    resp = r.query("big.example.test.", "TXT", use_edns=0, payload=4096)
    assert resp.flags & dns.flags.TC  # more than 1232 bytes: truncated for UDP (R14)
    assert not resp.answer
    assert resp.edns == 0
    full = r.query("big.example.test.", "TXT", tcp=True)
    assert not full.flags & dns.flags.TC
    assert sum(len(rr) for rr in full.answer) == 40


def test_spoofed_replies_ignored(fault, rrcache):
    def handler(q, t):
        wrong_id = default_answer(q)
        wrong_id.id = (q.id + 1) & 0xFFFF
        wrong_id.answer[0] = dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "6.6.6.6")
        other_q = dns.message.make_query("evil.test.", "A")
        other_q.id = q.id
        wrong_question = default_answer(other_q)
        wrong_question.answer[0] = dns.rrset.from_text("evil.test.", 300, "IN", "A", "6.6.6.7")
        wrong_type = dns.message.make_query(q.question[0].name, "AAAA")
        wrong_type.id = q.id
        wrong_type = dns.message.make_response(wrong_type)
        return [wrong_id, wrong_question, wrong_type, ("sleep", 0.05), default_answer(q)]
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    resp = r.query("spoof.test.")
    assert resp.answer[0][0].address == "192.0.2.7"
    assert r.query("spoof.test.").answer[0][0].address == "192.0.2.7"
    # The reply for another question was not cached under its own name either.
    r.query("evil.test.")
    assert up.count("evil.test.") == 1
    # Three lies for spoof.test. For evil.test the wrong ID is a lie, the "other question"
    # reply is its real answer, and the two datagrams after it reach a socket that stays open
    # for other queries (CONFORMANCE U2): no query waits for that ID any more, so they are
    # unwanted too.
    key = ("rrcache_unwanted_replies_total", frozenset())
    deadline = time.monotonic() + 5
    while r.metrics().get(key, 0) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    assert r.metrics()[key] == 6


def test_spoof_from_other_port_ignored(fault, rrcache):
    """A reply from the right address but another port never reaches the query."""
    import socket
    seen = {}

    def handler(q, t):
        # Send a well-formed lie from a different socket (other source port) first.
        lie = default_answer(q)
        lie.answer[0] = dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "6.6.6.6")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(lie.to_wire(), seen["src"])
        s.close()
        return [("sleep", 0.05), default_answer(q)]
    up = fault(handler)
    orig = up._record

    def record(transport, src, wire):
        seen["src"] = src
        return orig(transport, src, wire)
    up._record = record
    r = rrcache([f"127.0.0.1:{up.port}"])
    assert r.query("port.test.").answer[0][0].address == "192.0.2.7"


def test_upstream_ids_and_ports_random(fault, rrcache):
    """IDs from a CSPRNG; in strict mode (socket_reuse: 1) a new random port for every query.
    The pooled default is tested in test_socket_pool."""
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], upstream_extra="  socket_reuse: 1")
    for i in range(200):
        r.query(f"rand{i}.test.")
    ids = [s.id for s in up.seen]
    ports = [s.src[1] for s in up.seen]
    assert len(ids) == 200
    assert len(set(ids)) >= 195
    assert len(set(ports)) >= 190
    assert max(ports) - min(ports) > 20000
    # Not sequential.
    steps = {(b - a) & 0xFFFF for a, b in zip(ids, ids[1:])}
    assert len(steps) > 150


def test_coalescing_identical_queries(fault, rrcache):
    def handler(q, t):
        return [("sleep", 0.4), default_answer(q)]
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    barrier = threading.Barrier(40)
    names = ["CoAlEsCe.test." if i % 2 else "coalesce.test." for i in range(40)]

    def ask(i):
        q = dns.message.make_query(names[i], "A")
        barrier.wait()
        resp = dns.query.udp(q, "127.0.0.1", port=r.port, timeout=3)
        return q.id, resp
    with concurrent.futures.ThreadPoolExecutor(40) as ex:
        results = list(ex.map(ask, range(40)))
    for i, (qid, resp) in enumerate(results):
        assert resp.id == qid
        assert resp.question[0].name.to_text() == names[i]
        assert resp.answer[0][0].address == "192.0.2.7"
    assert up.count("coalesce.test.") == 1


def test_malformed_upstream_reply_servfail_and_not_cached(fault, rrcache):
    def handler(q, t):
        resp = default_answer(q).to_wire()
        return resp[:-3]  # RDATA cut short: malformed
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    t0 = time.monotonic()
    assert r.query("broken.test.", timeout=5).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t0 < 2.5


def test_malformed_reply_tries_another_upstream(fault, rrcache):
    bad = fault(lambda q, t: default_answer(q).to_wire()[:-3])
    good = fault()
    r = rrcache([f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"])
    for i in range(6):
        t0 = time.monotonic()
        assert r.query(f"mixed{i}.test.").rcode() == dns.rcode.NOERROR
        assert time.monotonic() - t0 < 0.5


def test_header_only_and_qr0_replies_rejected(fault, rrcache):
    def handler(q, t):
        wire = bytearray(default_answer(q).to_wire())
        header_only = bytes(wire[:2]) + b"\x81\x80" + b"\x00" * 8
        qr0 = bytearray(wire)
        qr0[2] &= 0x7F
        return [header_only, bytes(qr0)]
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    assert r.query("hdr.test.", timeout=5).rcode() == dns.rcode.SERVFAIL


def test_upstream_opt_not_passed_through(fault, rrcache):
    """U8: the client gets rrcache's OPT, not the upstream's options or size."""
    def handler(q, t):
        resp = default_answer(q)
        resp.use_edns(0, payload=4000, options=[dns.edns.GenericOption(65001, b"secret")])
        return resp
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    for _ in range(2):
        resp = r.query("opt.test.", use_edns=0)
        assert resp.payload == 1232
        assert not resp.options


def test_serves_slow_upstream_before_budget(fault, rrcache):
    up = fault(lambda q, t: [("sleep", 1.3), default_answer(q)])
    r = rrcache([f"127.0.0.1:{up.port}"])
    t0 = time.monotonic()
    resp = r.query("slow.test.", timeout=5)
    assert resp.rcode() == dns.rcode.NOERROR  # the first attempt's late answer still wins
    assert time.monotonic() - t0 < 2.0


def test_additional_data_never_answers_another_question(fault, rrcache):
    """U7 (RFC 2181 §5.4.1): records in AUTHORITY/ADDITIONAL of one answer are cached only as
    part of it."""
    def handler(q, t):
        resp = default_answer(q)
        if q.question[0].name.labels[0] == b"carrier":
            resp.additional.append(dns.rrset.from_text("victim.test.", 86400, "IN", "A",
                                                       "6.6.6.6"))
            resp.authority.append(dns.rrset.from_text("test.", 86400, "IN", "NS",
                                                      "evil.example."))
        return resp
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    carrier = r.query("carrier.test.")
    assert any(rr.name.to_text() == "victim.test." for rr in carrier.additional)
    victim = r.query("victim.test.")
    assert victim.answer[0][0].address == "192.0.2.7"
    assert up.count("victim.test.") == 1


def test_two_workers_share_the_cache(fault, rrcache):
    """With SO_REUSEPORT the kernel spreads clients over the workers; a name fetched through
    one is a hit through the other."""
    import socket
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], workers=2)
    r.query("shared.test.")
    for i in range(40):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(dns.message.make_query("shared.test.", "A").to_wire(), ("127.0.0.1", r.port))
        assert dns.message.from_wire(s.recv(4096)).answer
        s.close()
    assert up.count("shared.test.") == 1
    rc, log = r.stop()
    assert "2 worker(s)" in log
    # Both workers answered queries, and at least one of them answered from the cache a name
    # it never asked upstream itself.
    import re
    per = {int(m.group(1)): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
           for m in re.finditer(r"worker (\d+): queries udp=(\d+) tcp=\d+, cache hits=(\d+), "
                                r"upstream queries=(\d+)", log)}
    assert set(per) == {0, 1}, log
    assert all(udp > 0 for udp, _, _ in per.values()), per
    assert any(hits > 0 and ups == 0 for _, hits, ups in per.values()), per


def test_one_dead_name_does_not_take_the_upstream_down(fault, rrcache):
    """A client asking 1.5 times a second for a name the upstream never answers, while other
    names are asked now and then and answered: the upstream stays up and every other miss is
    answered. The dead name is answered SERVFAIL, from the cache between its attempts
    (cache.servfail_ttl, RFC 2308 §7.1). It used to be marked down after three timeouts in a
    row, and everyone else's misses got SERVFAIL."""
    import threading
    dead = dns.name.from_text("black.hole.")
    up = fault(lambda q, t: None if q.question[0].name == dead else default_answer(q))
    r = rrcache([f"127.0.0.1:{up.port}"])
    stop = threading.Event()
    dead_answers = []

    def one_dead():
        try:
            dead_answers.append(query(r.host, r.port, "black.hole.", timeout=3).rcode())
        except dns.exception.Timeout:
            dead_answers.append(None)
    askers = []

    def repeat_dead():
        while not stop.is_set():
            t = threading.Thread(target=one_dead)
            t.start()
            askers.append(t)
            stop.wait(0.66)
    t = threading.Thread(target=repeat_dead)
    t.start()
    try:
        bad = []
        for i in range(5):  # about 10 s, one other miss every 2 s
            stop.wait(2.0)
            resp = r.query(f"other{i}.test.")
            if resp.rcode() != dns.rcode.NOERROR:
                bad.append((i, dns.rcode.to_text(resp.rcode())))
    finally:
        stop.set()
        t.join(10)
        for a in askers:
            a.join(10)
    assert bad == [], bad
    assert "is down" not in r.log()
    assert dead_answers and all(a == dns.rcode.SERVFAIL for a in dead_answers), dead_answers
    # Remembered between attempts: fewer upstream queries for it than client queries.
    assert up.count("black.hole.") < len(dead_answers)
    m = r.metrics()
    assert m[("rrcache_upstream_up", frozenset({("upstream", f"127.0.0.1:{up.port}"),
                                            ("pool", "default")}))] == 1


def test_truncated_junk_does_not_take_the_upstream_down(fault, rrcache):
    """For one name the upstream answers a datagram with TC=1 and junk after the question:
    malformed, every attempt of the query fails. Those failures make the server suspect, but
    it answers its probe: it stays up. (It used to go down at once, within that one query.)"""
    junk = dns.name.from_text("tc.junk.")

    def handler(q, transport):
        if q.question[0].name != junk:
            return default_answer(q)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.TC
        return r.to_wire() + b"\x13\x37 junk"
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    assert r.query("tc.junk.", timeout=5).rcode() == dns.rcode.SERVFAIL
    time.sleep(1.5)  # the probe's verdict
    assert "is down" not in r.log()
    assert r.query("after.test.").rcode() == dns.rcode.NOERROR


def test_descriptor_shortage_is_not_the_upstreams_fault(fault, rrcache):
    """With 256 open files allowed, upstream.max_inflight is fitted at start (and logged), a
    burst of 600 misses beyond it is refused and counted, and the upstream is never marked down:
    right after the burst a new name is answered. (EMFILE used to mark the upstream down and
    clients got SERVFAIL after the burst had passed.)"""
    import socket
    slow = fault(lambda q, t: [("sleep", 0.3), default_answer(q)])
    r = rrcache([f"127.0.0.1:{slow.port}"], nofile=256)
    assert "file descriptors allowed" in r.log() and "upstream.max_inflight 10000 ->" in r.log()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answers = 0

    def drain(wait):
        nonlocal answers
        s.settimeout(wait)
        while True:
            try:
                s.recv(4096)
                answers += 1
            except (socket.timeout, BlockingIOError):
                return
    try:
        # In steps of 50, reading what came back between them (so that no socket buffer
        # overflows): all 600 are sent within a few tens of milliseconds.
        for i in range(600):
            s.sendto(dns.message.make_query(f"burst{i}.test.", "A").to_wire(),
                     ("127.0.0.1", r.port))
            if i % 50 == 49:
                drain(0.001)
        deadline = time.monotonic() + 5
        while answers < 600 and time.monotonic() < deadline:
            drain(0.2)
    finally:
        s.close()
    assert answers == 600
    assert "is down" not in r.log()
    assert r.query("after-burst.test.", timeout=3).rcode() == dns.rcode.NOERROR
    m = r.metrics()
    assert m[("rrcache_inflight_limit_total", frozenset())] > 0
    assert m.get(("rrcache_upstream_local_errors_total", frozenset()), 0) == 0


def test_servfail_at_the_budget_leaves_at_once(fault, rrcache):
    """An answer given by a timer (the budget spent: SERVFAIL) leaves before the loop waits
    again, not with whatever event comes next (the probe and statistics timers tick once a
    second): with a silent upstream and no other traffic, each SERVFAIL comes at the budget."""
    up = fault(lambda q, t: None)
    r = rrcache([f"127.0.0.1:{up.port}"],
                upstream_extra="  client_timeout: 300ms\n  timeout: 200ms\n  max_failures: 1000")
    for i in range(5):
        t0 = time.monotonic()
        resp = r.query(f"silent{i}.test.", timeout=3)
        took = time.monotonic() - t0
        assert resp.rcode() == dns.rcode.SERVFAIL
        assert took < 0.3 + 0.25, f"SERVFAIL after {took:.3f} s for a 300 ms budget"

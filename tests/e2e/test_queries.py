"""What rrcache does with odd and hostile client queries (CONFORMANCE R1-R15, R17)."""
import os
import random
import socket
import struct
import time

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest

from helpers import raw_udp, query

CORPUS = os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus")


def corpus(name):
    with open(os.path.join(CORPUS, name), "rb") as f:
        return f.read()


def hdr(id=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", id, flags, qd, an, ns, ar)


def qsec(name=b"\x03www\x04fake\x04test\x00", qtype=1):
    return name + struct.pack("!HH", qtype, 1)


def opt(size=1232, ttl=0, rdata=b""):
    return b"\x00" + struct.pack("!HHIH", 41, size, ttl, len(rdata)) + rdata


@pytest.fixture
def rr(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    r.up = up
    return r


@pytest.mark.parametrize("name", ["runt_0", "runt_1", "runt_11", "qr_set", "tc_set"])
def test_dropped(rr, name):
    """R1-R3: runts, QR=1 and TC=1 get no answer at all."""
    assert raw_udp("127.0.0.1", rr.port, corpus(name), timeout=0.3) is None
    assert rr.up.count() == 0


@pytest.mark.parametrize("name", ["qdcount_0", "qdcount_2", "self_pointer", "pointer_loop",
                                  "forward_pointer", "label_64", "name_256", "label_type_40",
                                  "label_type_80"])
def test_formerr_header_only(rr, name):
    """R4, R15: FORMERR, header only, same ID, never forwarded."""
    resp = raw_udp("127.0.0.1", rr.port, corpus(name))
    assert resp is not None and len(resp) == 12
    m = dns.message.from_wire(resp)
    assert m.id == 0x1234
    assert m.rcode() == dns.rcode.FORMERR
    assert m.flags & dns.flags.QR
    assert rr.up.count() == 0


@pytest.mark.parametrize("name", ["trailing_bytes", "rdlength_past_end", "ancount_65535",
                                  "pointer_loop_in_answer"])
def test_formerr_with_question(rr, name):
    """R5: trailing or broken records after the question: FORMERR, nothing forwarded."""
    resp = raw_udp("127.0.0.1", rr.port, corpus(name))
    m = dns.message.from_wire(resp)
    assert m.rcode() == dns.rcode.FORMERR
    assert m.question[0].name.to_text() == "www.example.com."
    assert rr.up.count() == 0


@pytest.mark.parametrize("name", ["two_opt", "opt_owner_a", "opt_in_answer",
                                  "edns_option_past_rdlength"])
def test_bad_opt_formerr_with_opt(rr, name):
    """R11: FORMERR with an OPT."""
    resp = raw_udp("127.0.0.1", rr.port, corpus(name))
    m = dns.message.from_wire(resp)
    assert m.rcode() == dns.rcode.FORMERR
    assert m.edns == 0
    assert rr.up.count() == 0


def test_unknown_opcode_notimp(rr):
    """R6: NOTIMP, no records, AA=0."""
    pkt = corpus("opcode_5")
    resp = raw_udp("127.0.0.1", rr.port, pkt)
    rid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", resp[:12])
    assert rid == 0x1234
    assert flags & 0x8000  # QR
    assert flags & 0x000F == dns.rcode.NOTIMP
    assert (flags >> 11) & 0xF == 5
    assert not flags & 0x0400  # AA
    assert (qd, an, ns, ar) == (1, 0, 0, 0)
    assert resp[12:] == pkt[12:]
    assert rr.up.count() == 0


def test_z_flag_answered_not_copied(rr):
    """R7"""
    pkt = hdr(flags=0x0140) + qsec()
    resp = raw_udp("127.0.0.1", rr.port, pkt)
    m = dns.message.from_wire(resp)
    assert m.rcode() == dns.rcode.NOERROR
    assert m.answer
    assert not struct.unpack("!H", resp[2:4])[0] & 0x0040


def test_badvers(rr):
    """R9: EDNS version 1 -> BADVERS, OPT version 0, no records."""
    pkt = hdr(ar=1) + qsec() + opt(ttl=0x00010000)
    m = dns.message.from_wire(raw_udp("127.0.0.1", rr.port, pkt))
    assert m.rcode() == dns.rcode.BADVERS
    assert m.edns == 0
    assert not m.answer
    assert rr.up.count() == 0


def test_unknown_edns_option_ignored(rr):
    """R10: answered normally; the option is not echoed."""
    q = dns.message.make_query("opt.fake.test.", "A", use_edns=0,
                               options=[dns.edns.GenericOption(65002, b"hello")])
    q.ednsflags |= 0x0100  # an unknown EDNS flag too
    m = dns.query.udp(q, "127.0.0.1", port=rr.port, timeout=2)
    assert m.rcode() == dns.rcode.NOERROR and m.answer
    assert not m.options
    assert not m.ednsflags & 0x0100


def test_small_edns_size_treated_as_512(knot, rrcache):
    """R13: a UDP size below 512 counts as 512; R14: bigger answers are truncated."""
    r = rrcache([f"127.0.0.1:{knot.port}"])
    m = r.query("example.test.", "NS", use_edns=0, payload=100)
    assert not m.flags & dns.flags.TC
    big = r.query("big.example.test.", "TXT", use_edns=0, payload=100)
    assert big.flags & dns.flags.TC and not big.answer and big.edns == 0
    noedns = r.query("big.example.test.", "TXT", use_edns=False)
    assert noedns.flags & dns.flags.TC and noedns.edns == -1
    # A 600-byte answer fits 1232 but not 512.
    ans = r.query("n1.example.test.", "A", use_edns=0, payload=1232)
    assert not ans.flags & dns.flags.TC


def test_answer_between_512_and_1232(fault, rrcache):
    def handler(q, t):
        resp = dns.message.make_response(q)
        resp.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "TXT",
                                               *[f'"{i}-' + "y" * 80 + '"' for i in range(8)]))
        return resp
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    m = r.query("mid.test.", "TXT", use_edns=0, payload=1232)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 8
    m = r.query("mid.test.", "TXT", use_edns=False)
    assert m.flags & dns.flags.TC and not m.answer
    m = r.query("mid.test.", "TXT", use_edns=0, payload=600)
    assert m.flags & dns.flags.TC
    m = r.query("mid.test.", "TXT", tcp=True)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 8


def test_ecs_forwarded_not_cached(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    for _ in range(2):
        q = dns.message.make_query("ecs.test.", "A", use_edns=0, options=[ecs])
        m = dns.query.udp(q, "127.0.0.1", port=r.port, timeout=2)
        assert m.answer
    assert up.count("ecs.test.") == 2
    # The client's ECS option went upstream as sent.
    fwd = dns.message.from_wire(up.seen[0].wire)
    assert any(o.otype == dns.edns.ECS for o in fwd.options)


def test_reply_leaves_from_query_address(fault, rrcache):
    """R17: on a wildcard socket the answer comes from the address the query was sent to."""
    up = fault()
    from helpers import free_port, wait_answering
    port = free_port("0.0.0.0")
    r = rrcache([f"127.0.0.1:{up.port}"], listen=[f"0.0.0.0:{port}"])
    for dst in ["127.0.0.1", "127.0.0.3", "127.0.1.9"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(dns.message.make_query("src.test.", "A").to_wire(), (dst, port))
        data, src = s.recvfrom(4096)
        s.close()
        assert src == (dst, port)
        assert dns.message.from_wire(data).answer


def test_ipv6_listener(fault, rrcache):
    up = fault()
    from helpers import free_port
    port4 = free_port()
    port6 = free_port("::1")
    r = rrcache([f"127.0.0.1:{up.port}"], listen=[f"127.0.0.1:{port4}", f"[::1]:{port6}"])
    m = query("::1", port6, "v6.test.")
    assert m.answer
    m = query("::1", port6, "v6.test.", tcp=True)
    assert m.answer


def test_mutated_packets_leave_it_alive(knot, rrcache):
    """10,000 mutations of good queries and corpus packets: it answers or drops each, never
    dies, and still answers correctly afterwards."""
    r = rrcache([f"127.0.0.1:{knot.port}"])
    rng = random.Random(20261123)
    seeds = [dns.message.make_query(n, t, use_edns=e).to_wire()
             for n, t, e in [("www.example.test.", "A", False), ("example.test.", "MX", 0),
                             ("big.example.test.", "TXT", 0)]]
    seeds += [corpus(f) for f in sorted(os.listdir(CORPUS))]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    deadline = time.time() + 60
    sent = 0
    for i in range(10000):
        if time.time() > deadline:
            break
        pkt = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            op = rng.randint(0, 3)
            if op == 0 and pkt:
                pkt[rng.randrange(len(pkt))] = rng.randrange(256)
            elif op == 1 and pkt:
                del pkt[rng.randrange(len(pkt)):]
            elif op == 2:
                pkt += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                pkt[2:4] = struct.pack("!H", rng.randrange(65536) & 0x79FF)
        try:
            s.sendto(bytes(pkt), ("127.0.0.1", r.port))
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        if i % 200 == 0:
            time.sleep(0.01)  # bounded rate: this is about content, not load
            try:
                while s.recv(65535):
                    pass
            except BlockingIOError:
                pass
    s.close()
    assert sent >= 9000
    assert r.proc.poll() is None
    m = r.query("www.example.test.")
    assert m.answer[0][0].address == "192.0.2.1"


def test_clients_waiting_on_one_question_are_bounded(fault, rrcache):
    """Four sockets repeating, as fast as they can, a question the upstream never answers:
    the clients waiting on it are bounded (upstream.max_waiters_per_query), the rest are
    answered SERVFAIL and counted, and memory stays put. (Every repeat used to wait on the
    query: RSS grew by 100-170 MB in 3 s.)"""
    import threading
    from helpers import rss_kib
    up = fault(lambda q, t: None)
    r = rrcache([f"127.0.0.1:{up.port}"])
    r.query("warm.up.", timeout=3)  # the process at its working size
    before = rss_kib(r.proc.pid)
    wire = dns.message.make_query("never.resolves.", "A").to_wire()
    stop = threading.Event()

    def flood():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            for _ in range(50000):
                if stop.is_set():
                    return
                try:
                    s.sendto(wire, ("127.0.0.1", r.port))
                except BlockingIOError:
                    pass
                try:
                    while True:
                        s.recv(512)
                except BlockingIOError:
                    pass
        finally:
            s.close()
    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    stop.wait(3.0)
    stop.set()
    for t in threads:
        t.join(10)
    grown = rss_kib(r.proc.pid) - before
    assert grown < 30 * 1024, f"RSS grew by {grown} KiB"
    m = r.metrics()
    assert m[("rrcache_waiters_refused_total", frozenset())] > 0
    assert up.count("never.resolves.") <= 4

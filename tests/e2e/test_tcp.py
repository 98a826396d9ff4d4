"""TCP per RFC 7766 (CONFORMANCE R16): framing, partial reads, pipelining with out-of-order
answers, idle timeout, connection and query limits."""
import socket
import struct
import time

import dns.flags
import dns.message
import dns.rcode
import pytest

from helpers import default_answer


def framed(name, qid, rdtype="A"):
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    w = q.to_wire()
    return struct.pack("!H", len(w)) + w


def read_msg(s):
    hdr = b""
    while len(hdr) < 2:
        chunk = s.recv(2 - len(hdr))
        if not chunk:
            return None
        hdr += chunk
    n = struct.unpack("!H", hdr)[0]
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return dns.message.from_wire(data)


def connect(port, timeout=3):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def closed_by_peer(s, within):
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture
def slow_up(fault):
    def handler(q, t):
        if q.question[0].name.labels[0].startswith(b"slow"):
            return [("sleep", 0.6), default_answer(q)]
        return default_answer(q)
    return fault(handler)


def test_pipelining_out_of_order(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"])
    r.query("fast2.test.")  # cached: answered at once
    s = connect(r.port)
    s.sendall(framed("slow.test.", 1) + framed("fast1.test.", 2) + framed("fast2.test.", 3))
    order = [read_msg(s).id for _ in range(3)]
    s.close()
    assert order[-1] == 1, order
    assert sorted(order) == [1, 2, 3]


def test_partial_reads(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"])
    s = connect(r.port)
    data = framed("dribble.test.", 77) + framed("dribble2.test.", 78)
    for b in data:
        s.sendall(bytes([b]))
        time.sleep(0.002)
    got = {read_msg(s).id, read_msg(s).id}
    s.close()
    assert got == {77, 78}


def test_many_queries_one_connection(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"])
    s = connect(r.port)
    s.sendall(b"".join(framed(f"many{i}.test.", i) for i in range(200)))
    ids = {read_msg(s).id for _ in range(200)}
    s.close()
    assert ids == set(range(200))


def test_idle_timeout(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"], config_extra="tcp:\n  idle_timeout: 500ms\n")
    s = connect(r.port)
    t0 = time.monotonic()
    assert closed_by_peer(s, 3)
    assert 0.4 < time.monotonic() - t0 < 1.5
    s.close()


def test_idle_timer_reset_only_by_complete_message(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"], config_extra="tcp:\n  idle_timeout: 600ms\n")
    # Complete messages keep it open past the timeout.
    s = connect(r.port)
    for i in range(4):
        s.sendall(framed(f"keep{i}.test.", i))
        assert read_msg(s).id == i
        time.sleep(0.3)
    # A message trickled byte by byte does not: closed ~600 ms after the last full one.
    t0 = time.monotonic()
    data = framed("x" * 60 + ".test.", 99)
    try:
        for b in data[:-1]:
            s.sendall(bytes([b]))
            time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_by_peer(s, 2)
    assert time.monotonic() - t0 < 1.5
    s.close()


def test_slow_query_keeps_connection_past_idle(slow_up, rrcache):
    """An outstanding query is not idle: its answer still arrives."""
    r = rrcache([f"127.0.0.1:{slow_up.port}"], config_extra="tcp:\n  idle_timeout: 300ms\n")
    s = connect(r.port)
    s.sendall(framed("slow-idle.test.", 5))
    m = read_msg(s)
    assert m is not None and m.id == 5
    s.close()


def test_max_connections_per_client(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"],
                config_extra="tcp:\n  max_connections_per_client: 2\n")
    a, b = connect(r.port), connect(r.port)
    a.sendall(framed("a.test.", 1))
    b.sendall(framed("b.test.", 2))
    assert read_msg(a).id == 1 and read_msg(b).id == 2
    c = connect(r.port)
    assert closed_by_peer(c, 2)
    c.close()
    a.close()
    time.sleep(0.2)
    d = connect(r.port)  # a slot is free again
    d.sendall(framed("d.test.", 4))
    assert read_msg(d).id == 4
    for x in (b, d):
        x.close()


def test_max_connections_total(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"], config_extra="tcp:\n  max_connections: 3\n")
    conns = [connect(r.port) for _ in range(3)]
    for i, c in enumerate(conns):
        c.sendall(framed(f"t{i}.test.", i))
        assert read_msg(c).id == i
    extra = connect(r.port)
    assert closed_by_peer(extra, 2)
    for c in conns + [extra]:
        c.close()


def test_max_queries_per_connection(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"],
                config_extra="tcp:\n  max_queries_per_connection: 3\n")
    s = connect(r.port)
    s.sendall(b"".join(framed(f"q{i}.test.", i) for i in range(5)))
    ids = []
    while True:
        m = read_msg(s)
        if m is None:
            break
        ids.append(m.id)
    s.close()
    assert sorted(ids) == [0, 1, 2]


def test_client_half_close_still_answered(slow_up, rrcache):
    r = rrcache([f"127.0.0.1:{slow_up.port}"])
    s = connect(r.port)
    s.sendall(framed("slow-half.test.", 9))
    s.shutdown(socket.SHUT_WR)
    m = read_msg(s)
    assert m is not None and m.id == 9
    s.close()


def test_client_not_reading_is_cut_off(knot, rrcache):
    """A client that pipelines big answers and never reads is closed, and rrcache lives."""
    r = rrcache([f"127.0.0.1:{knot.port}"])
    r.query("big.example.test.", "TXT", tcp=True)
    s = connect(r.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    payload = b"".join(framed("big.example.test.", i, "TXT") for i in range(1000))
    try:
        s.settimeout(5)
        s.sendall(payload)
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass
    time.sleep(0.5)
    s.close()
    assert r.query("www.example.test.").answer


def test_denied_clients_hold_no_connection_slots(slow_up, rrcache):
    """The ACL is checked at accept: connections from a denied address are closed at once, so
    eight of them cannot take the slots an allowed client needs (they used to hold all of
    them until the idle timeout)."""
    r = rrcache([f"127.0.0.1:{slow_up.port}"],
                config_extra="acl:\n  allow: [127.0.0.0/8]\n  deny: [127.0.0.2/32]\n"
                             "tcp:\n  max_connections: 4\n  idle_timeout: 10s\n")
    denied = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", r.port))
        denied.append(s)
    for s in denied:
        assert closed_by_peer(s, 2)
    ok = connect(r.port)
    ok.sendall(framed("allowed.test.", 7))
    m = read_msg(ok)
    assert m is not None and m.id == 7
    ok.close()
    for s in denied:
        s.close()
    m = r.metrics()
    assert m[("rrcache_tcp_connections_total", frozenset({("outcome", "refused_acl")}))] == 8


def test_dropped_queries_do_not_keep_a_connection_open(slow_up, rrcache):
    """Only answered queries refresh the idle timer: queries that are dropped (QR=1) sent every
    300 ms do not keep the connection past idle_timeout."""
    r = rrcache([f"127.0.0.1:{slow_up.port}"], config_extra="tcp:\n  idle_timeout: 600ms\n")
    s = connect(r.port)
    q = dns.message.make_query("dropped.test.", "A")
    q.flags |= dns.flags.QR
    w = q.to_wire()
    t0 = time.monotonic()
    closed = False
    while time.monotonic() - t0 < 3 and not closed:
        try:
            s.sendall(struct.pack("!H", len(w)) + w)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        closed = closed_by_peer(s, 0.3)
    assert closed, "the connection outlived its idle timeout"
    assert time.monotonic() - t0 < 1.5
    s.close()


def test_query_limit_ends_with_every_answer_and_a_fin(knot, rrcache):
    """200 pipelined queries with max_queries_per_connection 100: all 100 answers arrive, then
    an orderly end (FIN), not a reset. (34 answers and a reset, before.)"""
    r = rrcache([f"127.0.0.1:{knot.port}"],
                config_extra="tcp:\n  max_queries_per_connection: 100\n")
    s = connect(r.port, timeout=5)
    s.sendall(b"".join(framed(f"www.example.test.", i) for i in range(200)))
    ids = []
    try:
        while True:
            m = read_msg(s)
            if m is None:
                break
            ids.append(m.id)
    except ConnectionResetError:
        pytest.fail(f"reset after {len(ids)} answers")
    finally:
        s.close()
    assert sorted(ids) == list(range(100))

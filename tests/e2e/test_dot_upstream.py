"""DNS over TLS to upstreams (RFC 7858): unbound as the TLS server with a test CA made here;
answers, one handshake for many queries, the name and the chain verified (wrong name,
untrusted and expired certificates refused), SPKI pins, a server that closes idle
connections, resumption, answers out of order, and a connection gone silent."""
import base64
import time

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rrset
import pytest

from helpers import TlsUpstream, UnboundTls, metric

RECORDS = [f"n{i}.dot.test. 300 IN A 192.0.2.{i}" for i in range(1, 61)]


@pytest.fixture
def unbound_tls(certs):
    started = []

    def make(cert="cert", key="key", extra=""):
        u = UnboundTls(certs[cert], certs[key], RECORDS, extra)
        started.append(u)
        return u
    yield make
    for u in started:
        u.stop()


def ask(r, name, rdtype="A"):
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, r.host, port=r.port, timeout=5)


def tls_rrcache(rrcache, certs, server, extra_tls=""):
    return rrcache([server], config_extra=f"tls:\n  ca_file: {certs['ca']}\n{extra_tls}")


def test_answers_over_one_connection(certs, unbound_tls, rrcache):
    """60 names, one after the other and then all at once: every answer right, one TLS
    handshake, one connection open, the upstream label the address with port 853 style."""
    u = unbound_tls()
    r = tls_rrcache(rrcache, certs, f"tls://127.0.0.1:{u.port}#dot.test")
    up = f"127.0.0.1:{u.port}"
    for i in range(1, 31):
        m = ask(r, f"n{i}.dot.test.")
        assert m.rcode() == dns.rcode.NOERROR and m.answer[0][0].address == f"192.0.2.{i}"
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        got = list(ex.map(lambda i: ask(r, f"n{i}.dot.test."), range(31, 61)))
    for i, m in zip(range(31, 61), got):
        assert m.answer[0][0].address == f"192.0.2.{i}"
    m = ask(r, "none.dot.test.")
    assert m.rcode() == dns.rcode.NXDOMAIN
    lab = {"upstream": up, "pool": "default"}
    assert metric(r, "rrcache_upstream_queries_total", **lab) == 61
    assert metric(r, "rrcache_upstream_tls_handshakes_total", **lab) == 1
    assert metric(r, "rrcache_upstream_tls_connections", **lab) == 1
    assert metric(r, "rrcache_upstream_errors_total", **lab) == 0


def test_name_checked_without_hash_too(certs, unbound_tls, rrcache):
    """Without #NAME the address itself is checked (the certificate has 127.0.0.1); the map
    form with tls: true and name works the same."""
    u = unbound_tls()
    r = tls_rrcache(rrcache, certs, f"tls://127.0.0.1:{u.port}")
    assert ask(r, "n1.dot.test.").answer[0][0].address == "192.0.2.1"
    r2 = tls_rrcache(rrcache, certs,
                     f'{{address: "127.0.0.1:{u.port}", tls: true, name: dot.test}}')
    assert ask(r2, "n2.dot.test.").answer[0][0].address == "192.0.2.2"


@pytest.mark.parametrize("case", ["wrong_name", "untrusted", "expired", "wrong_pin"])
def test_refused_servers(case, certs, unbound_tls, rrcache):
    """A server whose certificate does not prove it is the one configured is never asked:
    SERVFAIL, no handshake counted, the reason logged."""
    cert, key, name, why = {
        "wrong_name": ("cert", "key", "evil.test", "does not match"),
        "untrusted": ("rogue_cert", "rogue_key", "dot.test", "issuer is unknown"),
        "expired": ("expired_cert", "expired_key", "dot.test", "expired"),
        "wrong_pin": ("cert", "key", "dot.test", "pin"),
    }[case]
    u = unbound_tls(cert, key)
    if case == "wrong_pin":
        other = base64.b64encode(bytes(range(32))).decode()
        server = f'{{address: "tls://127.0.0.1:{u.port}#{name}", pins: ["{other}"]}}'
    else:
        server = f"tls://127.0.0.1:{u.port}#{name}"
    r = tls_rrcache(rrcache, certs, server)
    m = ask(r, "n1.dot.test.")
    assert m.rcode() == dns.rcode.SERVFAIL
    assert metric(r, "rrcache_upstream_tls_handshakes_total", upstream=f"127.0.0.1:{u.port}",
                  pool="default") == 0
    rc, log = r.stop()
    assert why in log, log


def test_pinned_server(certs, unbound_tls, rrcache):
    """The right pin among others: answered."""
    u = unbound_tls()
    other = base64.b64encode(bytes(range(32))).decode()
    server = (f'{{address: "tls://127.0.0.1:{u.port}#dot.test", '
              f'pins: ["{other}", "{certs["pin"]}"]}}')
    r = tls_rrcache(rrcache, certs, server)
    assert ask(r, "n2.dot.test.").answer[0][0].address == "192.0.2.2"


def test_server_closes_idle_connections(certs, unbound_tls, rrcache):
    """unbound closes a connection idle for 500 ms, before rrcache would: the next query opens
    a new one, resumed with the ticket, and is answered."""
    u = unbound_tls(extra="    tcp-idle-timeout: 500\n")
    r = tls_rrcache(rrcache, certs, f"tls://127.0.0.1:{u.port}#dot.test")
    lab = {"upstream": f"127.0.0.1:{u.port}", "pool": "default"}
    for i in range(1, 4):
        assert ask(r, f"n{i}.dot.test.").answer[0][0].address == f"192.0.2.{i}"
        time.sleep(1.0)
    assert metric(r, "rrcache_upstream_tls_handshakes_total", **lab) == 3
    assert metric(r, "rrcache_upstream_tls_resumed_total", **lab) == 2
    assert metric(r, "rrcache_upstream_errors_total", **lab) == 0


def test_idle_close_by_rrcache(certs, unbound_tls, rrcache):
    """upstream.tls_idle_timeout closes rrcache's side first; the gauge follows."""
    u = unbound_tls()
    r = rrcache([f"tls://127.0.0.1:{u.port}#dot.test"],
                upstream_extra="  tls_idle_timeout: 300ms\n",
                config_extra=f"tls:\n  ca_file: {certs['ca']}\n")
    lab = {"upstream": f"127.0.0.1:{u.port}", "pool": "default"}
    ask(r, "n1.dot.test.")
    assert metric(r, "rrcache_upstream_tls_connections", **lab) == 1
    time.sleep(0.8)
    assert metric(r, "rrcache_upstream_tls_connections", **lab) == 0
    assert ask(r, "n2.dot.test.").answer[0][0].address == "192.0.2.2"
    assert metric(r, "rrcache_upstream_tls_resumed_total", **lab) == 1


def answer(q, addr="192.0.2.200"):
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", addr))
    return r


def test_pipelined_answers_out_of_order(certs, rrcache):
    """A server that waits for 8 queries on its connection and answers them last first:
    every client gets its own answer (RFC 7766 §6.2.1.1); the queries arrived padded to 128
    octets (RFC 8467) with an edns-tcp-keepalive option."""
    def reverse(idx, pending):
        if len(pending) < 8:
            return []
        return [answer(q, "192.0.2.%d" % int(q.question[0].name.labels[0][1:]))
                for q in reversed(pending)]
    up = TlsUpstream(certs["cert"], certs["key"], reverse)
    try:
        r = tls_rrcache(rrcache, certs, f"tls://127.0.0.1:{up.port}#dot.test")
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            got = list(ex.map(lambda i: ask(r, f"p{i}.dot.test."), range(1, 9)))
        for i, m in zip(range(1, 9), got):
            assert m.answer[0][0].address == f"192.0.2.{i}", (i, m)
        assert up.connections == 1
        for q in up.seen:
            assert len(q.to_wire()) % 128 == 0
            codes = [o.otype for o in q.options]
            assert 11 in codes and 12 in codes
    finally:
        up.stop()


def test_silent_connection_is_noticed(certs, rrcache):
    """The first connection completes its handshake and then never answers: the query times
    out (upstream.timeout), the connection is condemned, and the retry goes out on a new
    one, which answers: the client gets its answer within its budget."""
    def first_silent(idx, pending):
        return [] if idx == 0 else [answer(q) for q in pending]
    up = TlsUpstream(certs["cert"], certs["key"], first_silent)
    try:
        r = rrcache([f"tls://127.0.0.1:{up.port}#dot.test"],
                    upstream_extra="  timeout: 300ms\n  client_timeout: 2s\n",
                    config_extra=f"tls:\n  ca_file: {certs['ca']}\n")
        t0 = time.monotonic()
        m = ask(r, "quiet.dot.test.")
        assert m.rcode() == dns.rcode.NOERROR and m.answer[0][0].address == "192.0.2.200"
        assert time.monotonic() - t0 < 1.5
        assert up.connections == 2
        rc, log = r.stop()
        assert "silent since a query left; closed" in log
    finally:
        up.stop()


def test_probes_reuse_the_connection(certs, unbound_tls, rrcache):
    """The server goes away: queries fail, a probe over TLS fails too, and it is marked down.
    It comes back: the probes that bring it up (3) and the queries after go over one TLS
    connection (one handshake), not a session per probe."""
    u = unbound_tls()
    r = rrcache([f"tls://127.0.0.1:{u.port}#dot.test"],
                upstream_extra="  timeout: 200ms\n  client_timeout: 400ms\n  max_failures: 1\n"
                               "  probe_interval: 200ms\n  probe_successes: 3\n",
                config_extra=f"tls:\n  ca_file: {certs['ca']}\n")
    lab = {"upstream": f"127.0.0.1:{u.port}", "pool": "default"}
    assert ask(r, "n1.dot.test.").answer[0][0].address == "192.0.2.1"
    u.kill()
    deadline = time.monotonic() + 10
    i = 2
    while metric(r, "rrcache_upstream_up", **lab) != 0:
        assert time.monotonic() < deadline, "never marked down"
        ask(r, f"n{i}.dot.test.")
        i += 1
        time.sleep(0.1)
    before = metric(r, "rrcache_upstream_tls_handshakes_total", **lab)
    u.start()
    deadline = time.monotonic() + 10
    while metric(r, "rrcache_upstream_up", **lab) != 1:
        assert time.monotonic() < deadline, "never up again"
        time.sleep(0.1)
    assert ask(r, "n9.dot.test.").answer[0][0].address == "192.0.2.9"
    assert metric(r, "rrcache_upstream_tls_handshakes_total", **lab) == before + 1

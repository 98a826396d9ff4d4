"""DNS over TLS for clients (listen_tls, RFC 7858): kdig +tls and Python's ssl get answers,
several queries on one connection, sessions resumed; the ACL at accept; a client that never
completes its handshake is timed out, one that sends garbage is dropped; the certificate is
read again on SIGHUP without dropping the connections already open."""
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from helpers import free_port, make_certs, metric, need


def dot_rrcache(rrcache, upstream, certs, extra="", tls_extra="", cert=None, key=None):
    port = free_port()
    r = rrcache([upstream], config_extra=f"""listen_tls: ["127.0.0.1:{port}"]
tls:
  cert_file: {cert or certs['cert']}
  key_file: {key or certs['key']}
{tls_extra}{extra}""")
    r.dot_port = port
    return r


def context(certs):
    ctx = ssl.create_default_context(cafile=certs["ca"])
    ctx.set_alpn_protocols(["dot"])
    return ctx


def connect(r, certs, session=None, ctx=None):
    ctx = ctx or context(certs)
    raw = socket.create_connection(("127.0.0.1", r.dot_port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="dot.test", session=session)


def send(s, name, rdtype="A"):
    q = dns.message.make_query(name, rdtype)
    w = q.to_wire()
    s.sendall(struct.pack("!H", len(w)) + w)
    return q


def receive(s):
    def exactly(n):
        b = b""
        while len(b) < n:
            chunk = s.recv(n - len(b))
            assert chunk, "connection closed"
            b += chunk
        return b
    n = struct.unpack("!H", exactly(2))[0]
    return dns.message.from_wire(exactly(n))


def test_kdig_and_python_clients(knot, certs, rrcache):
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs)
    kdig = need("kdig", "knot-dnsutils")
    out = subprocess.run([kdig, "@127.0.0.1", "-p", str(r.dot_port), f"+tls-ca={certs['ca']}",
                          "+tls-hostname=dot.test", "+keepopen", "www.example.test", "A",
                          "www.example.test", "AAAA"],
                         capture_output=True, text=True, timeout=20).stdout
    assert "192.0.2.1" in out and "2001:db8::1" in out, out
    assert "TLS1.3" in out
    # dnspython's own DoT client.
    q = dns.message.make_query("mail.example.test.", "A")
    m = dns.query.tls(q, "127.0.0.1", port=r.dot_port, timeout=5,
                      ssl_context=ssl.create_default_context(cafile=certs["ca"]),
                      server_hostname="dot.test")
    assert m.answer[0][0].address == "192.0.2.25"
    assert metric(r, "rrcache_queries_total", transport="dot") == 3
    assert metric(r, "rrcache_dot_handshakes_total") == 2


def test_many_queries_one_connection_and_resumption(knot, certs, rrcache):
    """Ten queries written at once on one connection, each answered with its own ID; a second
    connection with the first one's session resumes it."""
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs)
    ctx = context(certs)
    s = connect(r, certs, ctx=ctx)
    assert s.selected_alpn_protocol() == "dot"
    sent = {send(s, f"n{i}.example.test.").id: i for i in range(10)}
    got = {}
    for _ in range(10):
        m = receive(s)
        got[m.id] = m
    assert set(got) == set(sent)
    for qid, i in sent.items():
        assert got[qid].answer[0][0].address == f"198.51.100.{i % 250 + 1}"
    session = s.session
    s.close()
    s2 = connect(r, certs, session=session, ctx=ctx)
    send(s2, "www.example.test.")
    assert receive(s2).answer
    assert s2.session_reused
    s2.close()
    assert metric(r, "rrcache_dot_handshakes_total") == 2
    assert metric(r, "rrcache_dot_resumed_total") == 1


def test_answers_share_records_and_close_notify(knot, certs, rrcache):
    """Twenty cached names asked in one write, followed at once by the client's close_notify:
    every answer comes back before the connection ends, and the answers given while one read
    is handled share TLS records instead of taking one each (counted on the wire)."""
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs)
    names = [f"n{i}.example.test." for i in range(20)]
    s = connect(r, certs)
    for n in names:
        send(s, n)
    for _ in names:
        receive(s)  # now cached
    s.close()
    raw = socket.create_connection(("127.0.0.1", r.dot_port), timeout=5)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context(certs).wrap_bio(incoming, outgoing, server_hostname="dot.test")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            data = raw.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)
    raw.sendall(outgoing.read())
    ids = set()
    for n in names:
        w = dns.message.make_query(n, "A").to_wire()
        ids.add(struct.unpack("!H", w[:2])[0])
        tls.write(struct.pack("!H", len(w)) + w)
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    raw.sendall(outgoing.read())  # the queries and close_notify, one write
    wire = b""
    while True:
        data = raw.recv(65536)
        if not data:
            break
        wire += data
    raw.close()
    records, i = 0, 0
    while i + 5 <= len(wire):
        if wire[i] == 23:  # application_data (TLS 1.3 hides the inner type in it)
            records += 1
        i += 5 + struct.unpack("!H", wire[i + 3:i + 5])[0]
    incoming.write(wire)
    plain = b""
    while True:
        try:
            chunk = tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            break
        if not chunk:
            break
        plain += chunk
    got = set()
    while len(plain) >= 2:
        n = struct.unpack("!H", plain[:2])[0]
        m = dns.message.from_wire(plain[2:2 + n])
        assert m.answer, m
        got.add(m.id)
        plain = plain[2 + n:]
    assert got == ids
    # Session tickets, the answers, close_notify: far fewer records than answers.
    assert records <= 8, records


def test_acl_at_accept(knot, certs, rrcache):
    """A client outside the ACL gets no handshake: the connection closes at accept."""
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs,
                    extra="acl:\n  allow: [10.0.0.0/8]\n  action: refuse\n")
    with pytest.raises((ssl.SSLError, OSError)):
        s = connect(r, certs)
        send(s, "www.example.test.")
        receive(s)
    assert metric(r, "rrcache_dot_handshakes_total") == 0


def test_silent_and_garbage_clients(knot, certs, rrcache):
    """One client connects and says nothing: closed after tls.handshake_timeout. Another
    sends bytes that are not TLS: dropped. Both counted; answers to others go on."""
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs,
                    tls_extra="  handshake_timeout: 300ms\n")
    silent = socket.create_connection(("127.0.0.1", r.dot_port), timeout=5)
    garbage = socket.create_connection(("127.0.0.1", r.dot_port), timeout=5)
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
    garbage.settimeout(3)
    try:
        while garbage.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    t0 = time.monotonic()
    silent.settimeout(3)
    try:
        assert silent.recv(10) == b""  # closed by rrcache
    except ConnectionResetError:
        pass
    assert time.monotonic() - t0 < 2
    silent.close()
    garbage.close()
    s = connect(r, certs)
    send(s, "www.example.test.")
    assert receive(s).answer
    s.close()
    assert metric(r, "rrcache_dot_handshake_failures_total", reason="timeout") == 1
    assert metric(r, "rrcache_dot_handshake_failures_total", reason="failed") == 1


def test_certificate_reloaded_on_sighup(knot, certs, rrcache, tmp_path):
    """The files are replaced by another certificate and SIGHUP sent: the connection open
    before still answers, a new one is shown the new certificate."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    shutil.copy(certs["cert"], cert)
    shutil.copy(certs["key"], key)
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs, cert=cert, key=key)
    old = connect(r, certs)
    first = old.getpeercert(binary_form=True)
    send(old, "www.example.test.")
    assert receive(old).answer
    os.makedirs(tmp_path / "new")
    other = make_certs(str(tmp_path / "new"))
    shutil.copy(other["cert"], cert)
    shutil.copy(other["key"], key)
    r.hup()
    time.sleep(0.5)
    send(old, "mail.example.test.")
    assert receive(old).answer[0][0].address == "192.0.2.25"
    ctx = ssl.create_default_context(cafile=other["ca"])
    raw = socket.create_connection(("127.0.0.1", r.dot_port), timeout=5)
    new = ctx.wrap_socket(raw, server_hostname="dot.test")
    assert new.getpeercert(binary_form=True) != first
    send(new, "www.example.test.")
    assert receive(new).answer
    new.close()
    old.close()


def test_not_cut_after_max_queries(knot, certs, rrcache):
    """tcp.max_queries_per_connection ends plain TCP connections, not TLS ones: 12 queries
    on one TLS connection with the limit at 5 are all answered."""
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs,
                    extra="tcp:\n  max_queries_per_connection: 5\n")
    s = connect(r, certs)
    for i in range(12):
        send(s, f"n{i}.example.test.")
        assert receive(s).answer[0][0].address == f"198.51.100.{i + 1}"
    s.close()
    assert metric(r, "rrcache_dot_handshakes_total") == 1


def test_handshakes_per_client(knot, certs, rrcache):
    """With tls.handshakes_per_client 2 (4 saved up), 10 connections opened at once: at most
    the saved-up ones and what refilled get a handshake, the rest are closed at accept and
    counted; a second later a new connection is served again."""
    r = dot_rrcache(rrcache, f"127.0.0.1:{knot.port}", certs,
                    tls_extra="  handshakes_per_client: 2\n")
    served = refused = 0
    for _ in range(10):
        try:
            s = connect(r, certs)
            send(s, "www.example.test.")
            assert receive(s).answer
            s.close()
            served += 1
        except (ssl.SSLError, OSError, AssertionError):
            refused += 1
    assert 4 <= served <= 6 and refused >= 4, (served, refused)
    assert metric(r, "rrcache_dot_handshake_failures_total", reason="rate") == refused
    time.sleep(1.2)
    s = connect(r, certs)
    send(s, "www.example.test.")
    assert receive(s).answer
    s.close()

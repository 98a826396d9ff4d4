"""The dnstap query log, read back with dnstap-ldns."""
import re
import shutil
import subprocess
import time

import dns.rcode

from helpers import query


def read_dnstap(path):
    exe = shutil.which("dnstap-ldns")
    assert exe, "dnstap-ldns is missing: apt-get install dnstap-ldns"
    out = subprocess.run([exe, "-y", "-r", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_dnstap_file_has_the_queries_sent(fault, rrcache, tmp_path):
    up = fault()
    path = str(tmp_path / "rrcache.dnstap")
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=f'dnstap:\n  file: "{path}"\n  identity: "test-node"\n')
    names = [f"tap{i}.test." for i in range(5)]
    for n in names:
        assert r.query(n).rcode() == dns.rcode.NOERROR
    assert query(r.host, r.port, names[0], tcp=True).rcode() == dns.rcode.NOERROR  # a hit
    m = r.metrics()
    sent = m[("rrcache_dnstap_messages_total", frozenset({("outcome", "sent")}))]
    dropped = m[("rrcache_dnstap_messages_total", frozenset({("outcome", "dropped")}))]
    rc, log = r.stop()  # flushes the log
    assert rc == 0, log
    text = read_dnstap(path)
    docs = [d for d in text.split("---") if d.strip()]
    types = [re.search(r"^  type: (\w+)", d, re.M).group(1) for d in docs]
    assert types.count("FORWARDER_QUERY") == 5
    assert types.count("FORWARDER_RESPONSE") == 5
    # 5 misses + 1 hit over TCP, plus the start-up probes (answered FORMERR)
    assert types.count("CLIENT_QUERY") >= 6
    assert types.count("CLIENT_RESPONSE") == types.count("CLIENT_QUERY")
    assert sent == len(docs) and dropped == 0
    assert all('identity: "test-node"' in d for d in docs)
    for n in names:
        cq = [d for d in docs if "type: CLIENT_QUERY" in d and n in d]
        assert cq, n
        assert 'query_address: "127.0.0.1"' in cq[0]
        assert "socket_protocol: UDP" in cq[0]
    tcp = [d for d in docs if "type: CLIENT_RESPONSE" in d and "socket_protocol: TCP" in d]
    assert len(tcp) == 1 and names[0] in tcp[0]
    fq = [d for d in docs if "type: FORWARDER_QUERY" in d][0]
    assert f"response_port: {up.port}" in fq


def test_dnstap_message_types_can_be_switched_off(fault, rrcache, tmp_path):
    up = fault()
    path = str(tmp_path / "q.dnstap")
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=f'dnstap:\n  file: "{path}"\n  client_responses: false\n'
                             "  forwarder_queries: false\n  forwarder_responses: false\n")
    r.query("only-queries.test.")
    r.stop()
    text = read_dnstap(path)
    assert "CLIENT_QUERY" in text and "only-queries.test." in text
    assert "CLIENT_RESPONSE" not in text and "FORWARDER" not in text


def test_dnstap_never_blocks_queries_when_its_reader_is_gone(fault, rrcache, tmp_path):
    """A unix socket nobody reads: the bounded queue fills, messages are dropped and counted,
    every query is still answered at once."""
    import time
    up = fault()
    sock = str(tmp_path / "nobody.sock")
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=f'dnstap:\n  socket: "{sock}"\n  queue_size: 4\n')
    worst = 0.0
    for i in range(60):
        t0 = time.monotonic()
        assert r.query(f"drop{i % 10}.test.").rcode() == dns.rcode.NOERROR
        worst = max(worst, time.monotonic() - t0)
    assert worst < 0.5, worst
    m = r.metrics()
    assert m[("rrcache_dnstap_messages_total", frozenset({("outcome", "dropped")}))] > 0


def test_dnstap_file_keeps_every_message_of_a_burst(fault, rrcache, tmp_path):
    """A burst fills fstrm's output queue (64 frames, 128 write vectors at once): every message
    counted as sent is in the file. (The file writer once refused more than 64 vectors, and
    fstrm then reopened, emptying the file.)"""
    import socket
    import dns.message
    up = fault()
    path = str(tmp_path / "burst.dnstap")
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=f'dnstap:\n  file: "{path}"\n')
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3000):
        s.sendto(dns.message.make_query(f"burst{i}.test.", "A").to_wire(), (r.host, r.port))
    s.close()
    from helpers import wait_for
    key = ("rrcache_dnstap_messages_total", frozenset({("outcome", "sent")}))
    # The burst's queries and their answers, upstream and to the client, are all counted.
    assert wait_for(lambda: r.metrics()[key] >= 4 * 1000, 10)
    # Until nothing more is logged (the last misses answered).
    last = [-1.0]

    def settled():
        now = r.metrics()[key]
        done, last[0] = now == last[0], now
        return done
    assert wait_for(lambda: time.sleep(0.5) or settled(), 15)
    sent = last[0]
    dropped = r.metrics()[("rrcache_dnstap_messages_total", frozenset({("outcome", "dropped")}))]
    rc, log = r.stop()
    assert rc == 0, log
    docs = [d for d in read_dnstap(path).split("---") if d.strip()]
    assert len(docs) == sent, (len(docs), sent, dropped)

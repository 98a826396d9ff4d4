"""What a hostile or broken server at redis.url can do: nothing it sends may abort rrcache or
take memory without bound (docs/protocol.md L4). Each case is a protocol error: the
connection is dropped, counted (rrcache_redis_protocol_errors_total) and tried again after the
backoff, while queries are answered from the upstream."""
import time

import dns.rcode

from helpers import rss_kib, wait_for


def conf(url):
    return f"""redis:
  url: "{url}"
  backoff_min: 50ms
  backoff_max: 200ms
"""


def protocol_errors(r):
    return r.metrics().get(("rrcache_redis_protocol_errors_total", frozenset()), 0)


def test_greeting_is_a_protocol_error_not_a_crash(fault, rrcache, fake_redis):
    """A server that speaks first (hiredis 0.14 asserted on it: exit 134, on every restart)."""
    up = fault()
    rd = fake_redis(greeting=b"+OK welcome\r\n")
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf(rd.url))
    assert wait_for(lambda: "protocol error: a reply nobody asked for" in r.log())
    for i in range(5):
        assert r.query(f"g{i}.test.").rcode() == dns.rcode.NOERROR
    # Dropped and tried again after each backoff, never aborting.
    assert wait_for(lambda: rd.connections >= 3)
    assert r.proc.poll() is None
    assert protocol_errors(r) >= 3


def test_one_reply_too_many(fault, rrcache, fake_redis):
    """Two replies to one GET: the spare one is refused, the process lives on."""
    up = fault()
    rd = fake_redis(handler=lambda args: b"$-1\r\n$-1\r\n+OK\r\n"
                    if args[0].upper() == b"GET" else None)
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf(rd.url))
    assert wait_for(lambda: "Redis connection ready" in r.log())
    assert r.query("extra.test.").rcode() == dns.rcode.NOERROR
    assert wait_for(lambda: "protocol error: a reply nobody asked for" in r.log())
    assert r.query("extra2.test.").rcode() == dns.rcode.NOERROR
    assert r.proc.poll() is None
    assert protocol_errors(r) >= 1


def test_huge_value_is_refused_early(fault, rrcache, fake_redis):
    """A 100 MB value under rrcache's key: the connection goes once the reply outgrows any value
    rrcache stores (used to be read whole: +100 MB of RSS that stayed, a worker stalled)."""
    up = fault()
    size = 100 * 1024 * 1024
    sent = {"bytes": 0}

    def huge(args):
        if args[0].upper() != b"GET":
            return b"+OK\r\n"

        def chunks():
            yield b"$%d\r\n" % size
            piece = b"x" * (1 << 20)
            for _ in range(size >> 20):
                sent["bytes"] += len(piece)
                yield piece
            yield b"\r\n"
        return chunks()
    rd = fake_redis(handler=huge)
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf(rd.url))
    assert wait_for(lambda: "Redis connection ready" in r.log())
    for i in range(20):
        r.query(f"hot{i}.test.")
    before = rss_kib(r.proc.pid)
    t0 = time.monotonic()
    assert r.query("huge.test.").rcode() == dns.rcode.NOERROR  # from the upstream
    assert wait_for(lambda: "protocol error: a reply larger than any rrcache stores" in r.log())
    # Cache hits stay quick while it happens.
    worst = 0.0
    for i in range(200):
        q0 = time.monotonic()
        assert r.query(f"hot{i % 20}.test.").rcode() == dns.rcode.NOERROR
        worst = max(worst, time.monotonic() - q0)
    assert worst < 0.25, worst
    assert time.monotonic() - t0 < 10
    grown = rss_kib(r.proc.pid) - before
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB"
    assert sent["bytes"] < size, "rrcache read the whole value"
    assert protocol_errors(r) >= 1

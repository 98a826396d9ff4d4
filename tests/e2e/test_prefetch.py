"""Prefetch through the real binary: a popular name asked late in its TTL is refreshed in the
background, so the client after its expiry is answered from the cache; an unpopular one, or
with prefetch off, is not; with Redis, one instance of the fleet refreshes for all."""
import time

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from helpers import metric, wait_for

TTL = 5


def short_ttl(q, transport):
    r = dns.message.make_response(q)
    if q.question[0].rdtype == dns.rdatatype.A:
        r.answer.append(dns.rrset.from_text(q.question[0].name, TTL, "IN", "A", "192.0.2.5"))
    return r


def sleep_until(t):
    time.sleep(max(0.0, t - time.monotonic()))


def test_popular_name_is_refreshed_before_it_expires(fault, rrcache):
    up = fault(short_ttl)
    r = rrcache([f"127.0.0.1:{up.port}"])
    t0 = time.monotonic()
    for name in ("pop.test.", "rare.test."):
        assert r.query(name).rcode() == dns.rcode.NOERROR
    for _ in range(3):
        assert r.query("pop.test.").rcode() == dns.rcode.NOERROR  # hits: popular
    assert up.count("pop.test.") == 1
    # The last tenth of its TTL: answered from the cache, refreshed behind it.
    sleep_until(t0 + TTL * 0.93)
    assert r.query("pop.test.").rcode() == dns.rcode.NOERROR
    assert r.query("rare.test.").rcode() == dns.rcode.NOERROR  # one hit: not refreshed
    assert wait_for(lambda: up.count("pop.test.") == 2, deadline=2)
    assert metric(r, "rrcache_prefetches_total") == 1
    # Past the first answer's expiry: still a hit, with the refreshed answer's TTL.
    sleep_until(t0 + TTL + 0.8)
    misses = metric(r, "rrcache_cache_requests_total", result="miss")
    resp = r.query("pop.test.")
    assert resp.rcode() == dns.rcode.NOERROR and resp.answer[0].ttl >= 1
    assert up.count("pop.test.") == 2
    assert metric(r, "rrcache_cache_requests_total", result="miss") == misses
    # The unpopular one expired and is a miss.
    assert r.query("rare.test.").rcode() == dns.rcode.NOERROR
    assert up.count("rare.test.") == 2
    assert metric(r, "rrcache_prefetches_total") == 1


def test_prefetch_off(fault, rrcache):
    up = fault(short_ttl)
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra="cache:\n  prefetch: false\n")
    t0 = time.monotonic()
    for _ in range(5):
        r.query("pop.test.")
    sleep_until(t0 + TTL * 0.93)
    r.query("pop.test.")
    time.sleep(0.3)
    assert up.count("pop.test.") == 1
    assert metric(r, "rrcache_prefetches_total") == 0


def test_one_refresh_for_the_fleet(fault, rrcache, redis):
    """Two instances sharing Redis both find the name popular and late: one takes the key's
    lock and refreshes it (and writes it back), the other leaves it to it. A TTL of 20 s:
    the instance that got the answer from Redis holds it for whole seconds left (19), so
    the two last tenths overlap in [18, 19] s."""
    ttl = 20

    def long_ttl(q, transport):
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", "192.0.2.6"))
        return r
    up = fault(long_ttl)
    rd = redis()
    red = f'redis:\n  url: "{rd.url}"\n  key_secret: "k"\n  fleet_wait: 2s\n'
    a = rrcache([f"127.0.0.1:{up.port}"], config_extra=red)
    b = rrcache([f"127.0.0.1:{up.port}"], config_extra=red)
    t0 = time.monotonic()
    assert a.query("fleet.test.").rcode() == dns.rcode.NOERROR
    assert wait_for(lambda: len(rd.keys("rrc:*")) >= 1)
    for r in (a, b):
        for _ in range(3):
            assert r.query("fleet.test.").rcode() == dns.rcode.NOERROR
    assert up.count("fleet.test.") == 1  # b had it from Redis
    sleep_until(t0 + 18.4)
    a.query("fleet.test.")
    b.query("fleet.test.")
    assert wait_for(lambda: metric(a, "rrcache_prefetches_total") +
                    metric(b, "rrcache_prefetches_total") == 2, deadline=2)
    assert wait_for(lambda: metric(a, "rrcache_prefetch_fleet_skipped_total") +
                    metric(b, "rrcache_prefetch_fleet_skipped_total") == 1, deadline=2)
    time.sleep(0.3)
    assert up.count("fleet.test.") == 2  # one refresh for both

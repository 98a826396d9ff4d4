"""Serve-stale (CONFORMANCE C5, RFC 8767): expired answers are served, with TTL 30, only when
the refresh fails or times out, and only within max_stale."""
import time

import dns.message
import dns.rcode
import dns.rrset

STALE = """cache:
  serve_stale: true
  max_stale: {max_stale}
"""
FAST = "  timeout: 300ms\n  client_timeout: 800ms\n  probe_interval: 30s"


def make_upstream(fault, state):
    """Answers with TTL 1 and the address in state['addr'] while state['up'], else silent."""
    def handler(q, t):
        if not state["up"]:
            return None
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 1, "IN", "A", state["addr"]))
        return r
    return fault(handler)


def test_stale_served_when_refresh_times_out(fault, rrcache):
    state = {"up": True, "addr": "192.0.2.10"}
    up = make_upstream(fault, state)
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=STALE.format(max_stale="1h"),
                upstream_extra=FAST)
    assert r.query("stale.test.").answer[0].ttl == 1
    time.sleep(1.3)
    state["up"] = False
    t0 = time.monotonic()
    resp = r.query("stale.test.", timeout=5)
    took = time.monotonic() - t0
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.answer[0][0].address == "192.0.2.10"
    assert resp.answer[0].ttl == 30
    assert 0.6 < took < 1.5  # after the refresh had its budget, not before
    # Once the upstream is marked down, stale answers come at once.
    for _ in range(3):
        r.query("stale.test.", timeout=5)
    t0 = time.monotonic()
    assert r.query("stale.test.", timeout=5).answer[0].ttl == 30
    assert time.monotonic() - t0 < 0.3
    t0 = time.monotonic()
    resp = r.query("stale.test.", tcp=True, timeout=5)
    assert resp.answer[0].ttl == 30 and resp.answer[0][0].address == "192.0.2.10"
    assert time.monotonic() - t0 < 0.3


def test_fresh_answer_wins_over_stale(fault, rrcache):
    state = {"up": True, "addr": "192.0.2.10"}
    up = make_upstream(fault, state)
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=STALE.format(max_stale="1h"),
                upstream_extra=FAST)
    r.query("fresh.test.")
    time.sleep(1.3)
    state["addr"] = "192.0.2.11"
    resp = r.query("fresh.test.")
    assert resp.answer[0][0].address == "192.0.2.11"
    assert resp.answer[0].ttl == 1


def test_no_stale_when_disabled(fault, rrcache):
    state = {"up": True, "addr": "192.0.2.10"}
    up = make_upstream(fault, state)
    r = rrcache([f"127.0.0.1:{up.port}"], upstream_extra=FAST)
    r.query("nostale.test.")
    time.sleep(1.3)
    state["up"] = False
    assert r.query("nostale.test.", timeout=5).rcode() == dns.rcode.SERVFAIL


def test_no_stale_past_max_stale(fault, rrcache):
    state = {"up": True, "addr": "192.0.2.10"}
    up = make_upstream(fault, state)
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=STALE.format(max_stale="1"),
                upstream_extra=FAST)
    r.query("old.test.")
    time.sleep(2.5)  # TTL 1 + max_stale 1 have both passed
    state["up"] = False
    assert r.query("old.test.", timeout=5).rcode() == dns.rcode.SERVFAIL


def test_stale_for_coalesced_clients_over_tcp_and_udp(fault, rrcache):
    import concurrent.futures
    state = {"up": True, "addr": "192.0.2.10"}
    up = make_upstream(fault, state)
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=STALE.format(max_stale="1h"),
                upstream_extra=FAST)
    r.query("many.test.")
    time.sleep(1.3)
    state["up"] = False
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        res = list(ex.map(lambda i: r.query("many.test.", tcp=bool(i % 2), timeout=5),
                          range(6)))
    for resp in res:
        assert resp.answer[0][0].address == "192.0.2.10" and resp.answer[0].ttl == 30

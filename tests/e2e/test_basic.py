"""Resolution through rrcache against a real authoritative server (Knot), and the cache rules
(CONFORMANCE C1-C4, C6; R8, R12)."""
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from helpers import default_answer, query


@pytest.mark.parametrize("tcp", [False, True])
@pytest.mark.parametrize("name,rdtype,expect", [
    ("www.example.test.", "A", "192.0.2.1"),
    ("www.example.test.", "AAAA", "2001:db8::1"),
    ("example.test.", "MX", "10 mail.example.test."),
    ("txt.example.test.", "TXT", '"hello rrcache"'),
    ("alias.example.test.", "A", "192.0.2.1"),
    ("anything.wild.example.test.", "A", "192.0.2.99"),
])
def test_record_types(knot, rrcache, tcp, name, rdtype, expect):
    r = rrcache([f"127.0.0.1:{knot.port}"])
    for _ in range(2):  # a miss, then a hit
        resp = r.query(name, rdtype, tcp=tcp)
        assert resp.rcode() == dns.rcode.NOERROR
        texts = [rd.to_text() for rrset in resp.answer for rd in rrset]
        assert expect in texts
    if name.startswith("alias"):
        assert any(rrset.rdtype == dns.rdatatype.CNAME for rrset in resp.answer)


def test_hit_does_not_reach_upstream_and_ages_ttl(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    first = r.query("aging.test.")
    assert first.answer[0].ttl == 300
    assert up.count("aging.test.") == 1
    time.sleep(2.2)
    second = r.query("aging.test.")
    assert up.count("aging.test.") == 1
    assert second.answer[0].ttl in (297, 298)
    assert second.answer[0][0].address == "192.0.2.7"


def test_id_and_case_preserved_on_hits(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    r.query("www.casetest.test.")
    for name in ["WwW.CaseTest.TEST.", "www.casetest.test.", "WWW.CASETEST.TEST."]:
        q = dns.message.make_query(name, "A")
        q.id = 0xABCD
        resp = dns.query.udp(q, "127.0.0.1", port=r.port, timeout=2)
        assert resp.id == 0xABCD
        assert resp.question[0].name.to_text() == name  # byte-exact case (C6)
        assert resp.question[0].name.labels == dns.name.from_text(name).labels
    assert up.count("www.casetest.test.") == 1


def test_do_and_cd_are_part_of_the_key(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    r.query("keyed.test.")
    r.query("keyed.test.", want_dnssec=True)  # DO (and EDNS)
    q = dns.message.make_query("keyed.test.", "A")
    q.flags |= dns.flags.CD
    dns.query.udp(q, "127.0.0.1", port=r.port, timeout=2)
    r.query("keyed.test.", use_edns=0)  # EDNS without DO
    assert up.count("keyed.test.") == 4
    # Each variant is now a hit.
    r.query("keyed.test.", want_dnssec=True)
    dns.query.udp(q, "127.0.0.1", port=r.port, timeout=2)
    assert up.count("keyed.test.") == 4


def test_negative_caching_from_soa(knot, rrcache):
    r = rrcache([f"127.0.0.1:{knot.port}"])
    resp = r.query("missing.example.test.")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    soa = resp.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == 300  # min(SOA TTL 3600, MINIMUM 300)  (RFC 2308 §5)
    time.sleep(1.1)
    again = r.query("missing.example.test.")
    assert again.rcode() == dns.rcode.NXDOMAIN
    assert again.authority[0].ttl in (298, 299)  # served from cache, aged
    nodata = r.query("www.example.test.", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_negative_without_soa_not_cached(fault, rrcache):
    def handler(q, t):
        resp = dns.message.make_response(q)
        resp.set_rcode(dns.rcode.NXDOMAIN)
        return resp
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    for _ in range(3):
        assert r.query("nosoa.test.").rcode() == dns.rcode.NXDOMAIN
    assert up.count("nosoa.test.") == 3


def test_max_negative_ttl_caps(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra="cache:\n  max_negative_ttl: 1\n")
    assert r.query("nxcapped.test.").authority[0].ttl == 1
    r.query("nxcapped.test.")
    assert up.count("nxcapped.test.") == 1
    time.sleep(1.2)
    r.query("nxcapped.test.")
    assert up.count("nxcapped.test.") == 2


def test_ttl_zero_passed_on_not_cached(knot, rrcache):
    r = rrcache([f"127.0.0.1:{knot.port}"])
    for _ in range(2):
        resp = r.query("zero.example.test.")
        assert resp.answer[0].ttl == 0
        assert resp.answer[0][0].address == "192.0.2.3"


def test_ttl_zero_hits_upstream_every_time(fault, rrcache):
    def handler(q, t):
        resp = dns.message.make_response(q)
        resp.answer.append(dns.rrset.from_text(q.question[0].name, 0, "IN", "A", "192.0.2.8"))
        return resp
    up = fault(handler)
    r = rrcache([f"127.0.0.1:{up.port}"])
    for _ in range(3):
        assert r.query("ttl0.test.").answer[0].ttl == 0
    assert up.count("ttl0.test.") == 3


def test_ttl_clamps(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra="cache:\n  min_ttl: 400\n  max_ttl: 1000\n")
    assert r.query("clamp.test.").answer[0].ttl == 400  # 300 raised to min_ttl


def test_short_ttl_expires(knot, rrcache):
    r = rrcache([f"127.0.0.1:{knot.port}"])
    assert r.query("short.example.test.").answer[0].ttl == 2
    time.sleep(2.2)
    # Expired: fetched again, full TTL.
    assert r.query("short.example.test.").answer[0].ttl == 2


def test_unknown_type_forwarded(knot, rrcache):
    """R8: TYPE1000 is forwarded and answered, never dropped."""
    r = rrcache([f"127.0.0.1:{knot.port}"])
    resp = r.query("www.example.test.", "TYPE1000")
    assert resp.rcode() == dns.rcode.NOERROR
    assert not resp.answer


def test_no_opt_without_edns_even_from_cache(knot, rrcache):
    """R12: no OPT in the reply when the query had none, for a miss and a hit."""
    r = rrcache([f"127.0.0.1:{knot.port}"])
    for _ in range(2):
        resp = r.query("www.example.test.", use_edns=False)
        assert resp.edns == -1
        resp = r.query("www.example.test.", use_edns=0)
        assert resp.edns == 0
        assert resp.payload == 1232


def test_flags_only_sidecar(fault):
    """No file at all: --listen and --upstream are enough."""
    import subprocess
    from helpers import RRCACHE, free_port, wait_answering
    up = fault()
    port = free_port()
    p = subprocess.Popen([RRCACHE, "--listen", f"127.0.0.1:{port}", "--upstream",
                          f"127.0.0.1:{up.port}", "--workers", "1", "--cache-size", "1MiB",
                          "--metrics", f"127.0.0.1:{free_port()}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_answering(port, proc=p)
        assert query("127.0.0.1", port, "sidecar.test.").answer[0][0].address == "192.0.2.7"
    finally:
        p.terminate()
        out = p.communicate(timeout=10)[0].decode()
    assert p.returncode == 0, out

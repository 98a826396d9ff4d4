"""DNSSEC-aware forwarding (not validating): DO and CD go upstream and split the cache; the AD
bit of upstream answers is kept only with upstream.trust_ad, and a client gets it only when
its query had DO or AD (RFC 6840 §5.8), on the miss and on every hit. RRSIG, NSEC and NSEC3
records reach only clients that set DO (RFC 4035 §3.2.1). With signed zones served by knot,
asked directly and through unbound validating them."""
import shutil
import tempfile
import time

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from helpers import Knot, Unbound, metric, sign_zone

DNSSEC_TYPES = (dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3)


def with_ad(q, transport):
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AD
    if q.question[0].rdtype == dns.rdatatype.A:
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.44"))
    return r


def ask(r, name, do=False, ad=False, cd=False):
    q = dns.message.make_query(name, "A", use_edns=0, want_dnssec=do)
    if ad:
        q.flags |= dns.flags.AD
    if cd:
        q.flags |= dns.flags.CD
    return dns.query.udp(q, r.host, port=r.port, timeout=3)


def test_ad_only_when_trusted_and_asked(fault, rrcache):
    up = fault(with_ad)
    for trust in (False, True):
        r = rrcache([f"127.0.0.1:{up.port}"],
                    upstream_extra=f"  trust_ad: {'true' if trust else 'false'}\n")
        name = f"ad-{trust}.test."
        for rnd in range(2):  # the miss, then a hit
            for do, ad, want in ((True, False, trust), (False, True, trust),
                                 (False, False, False)):
                resp = ask(r, name, do=do, ad=ad)
                assert bool(resp.flags & dns.flags.AD) == want, (trust, rnd, do, ad)
        # AD is asked for upstream (RFC 6840 §5.7) exactly when it is trusted, whatever the
        # client set: the stored answer serves every client of its key.
        ups = [dns.message.from_wire(s.wire) for s in up.seen
               if s.qname == dns.name.from_text(name)]
        assert len(ups) == 2 and all(bool(m.flags & dns.flags.AD) == trust for m in ups)
        r.stop()


def test_do_and_cd_go_upstream_and_split_the_cache(fault, rrcache):
    up = fault(with_ad)
    r = rrcache([f"127.0.0.1:{up.port}"])
    plain = ask(r, "split.test.")
    do = ask(r, "split.test.", do=True)
    cd = ask(r, "split.test.", cd=True)
    assert plain.answer and do.answer and cd.answer
    assert cd.flags & dns.flags.CD and not plain.flags & dns.flags.CD
    seen = [s for s in up.seen if s.qname == dns.name.from_text("split.test.")]
    assert len(seen) == 3  # three cache keys
    msgs = [dns.message.from_wire(s.wire) for s in seen]
    assert sum(1 for m in msgs if m.ednsflags & dns.flags.DO) == 1
    assert sum(1 for m in msgs if m.flags & dns.flags.CD) == 1
    # Each again: hits.
    for kw in ({}, {"do": True}, {"cd": True}):
        ask(r, "split.test.", **kw)
    assert len([s for s in up.seen if s.qname == dns.name.from_text("split.test.")]) == 3


@pytest.fixture(scope="module")
def zones():
    """Three zones signed by the test: signed.test (NSEC), nsec3.test (NSEC3) and bogus.test
    (signatures expired in 2020), served by knot. Yields (knot, {origin: DS})."""
    d = tempfile.mkdtemp(prefix="rrc-zones-")
    good, ds_good = sign_zone(d, "signed.test", ["www 300 IN A 192.0.2.10",
                                                 "ftp 300 IN A 192.0.2.11",
                                                 'txt 300 IN TXT "signed"'])
    n3, ds_n3 = sign_zone(d, "nsec3.test", ["www 300 IN A 192.0.2.30"], nsec3=True)
    bad, ds_bad = sign_zone(d, "bogus.test", ["www 300 IN A 192.0.2.66",
                                              "ftp 300 IN A 192.0.2.67"], expired=True)
    k = Knot(extra_zones=[("signed.test.", good), ("nsec3.test.", n3), ("bogus.test.", bad)])
    yield k, {"signed.test.": ds_good, "nsec3.test.": ds_n3, "bogus.test.": ds_bad}
    k.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def validator(zones):
    """unbound validating the three zones from their DS records, asking knot."""
    k, anchors = zones
    u = Unbound({origin: k.port for origin in anchors}, list(anchors.values()))
    yield u
    u.stop()


def ask_msg(r, name, rdtype="A", do=False, ad=False, cd=False, edns=True, tcp=False):
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else None, want_dnssec=do)
    if ad:
        q.flags |= dns.flags.AD
    if cd:
        q.flags |= dns.flags.CD
    if tcp:
        return dns.query.tcp(q, r.host, port=r.port, timeout=5)
    return dns.query.udp(q, r.host, port=r.port, timeout=5)


def dnssec_records(m):
    return [(sec, rr.rdtype) for sec, rrs in (("an", m.answer), ("ns", m.authority),
                                              ("ar", m.additional))
            for rr in rrs if rr.rdtype in DNSSEC_TYPES]


def validate_answer(m, origin, keys):
    """Every RRset of the answer section checks against its RRSIG with the zone's keys."""
    name = dns.name.from_text(origin)
    sigs = [rr for rr in m.answer if rr.rdtype == dns.rdatatype.RRSIG]
    data = [rr for rr in m.answer if rr.rdtype != dns.rdatatype.RRSIG]
    assert sigs and data
    for rrset in data:
        sig = next(s for s in sigs if s.name == rrset.name and s.covers == rrset.rdtype)
        dns.dnssec.validate(rrset, sig, {name: keys})


def test_signed_zone_records_only_with_do(zones, rrcache):
    """Through rrcache to the signed zones' server (nothing validates): a client with DO gets
    the signatures and the denial records, on the miss and on the hit, and they still check
    against the zone's key (also asked in mixed case: the client's case comes back); a client
    without DO, with or without EDNS, gets none of them."""
    k, _ = zones
    r = rrcache([f"127.0.0.1:{k.port}"])
    keys_msg = ask_msg(r, "signed.test.", "DNSKEY", do=True)
    keys = next(rr for rr in keys_msg.answer if rr.rdtype == dns.rdatatype.DNSKEY)
    validate_answer(keys_msg, "signed.test.", keys)
    for rnd in range(2):  # the miss, then the hit
        hits = metric(r, "rrcache_cache_requests_total", result="hit")
        m = ask_msg(r, "WwW.SiGnEd.TeSt.", do=True)
        assert m.ednsflags & dns.flags.DO
        assert ("an", dns.rdatatype.RRSIG) in dnssec_records(m)
        validate_answer(m, "signed.test.", keys)
        if rnd:
            assert metric(r, "rrcache_cache_requests_total", result="hit") == hits + 1
        for edns in (True, False):
            plain = ask_msg(r, "www.signed.test.", edns=edns)
            assert plain.answer and not dnssec_records(plain), (rnd, edns)
            assert not plain.ednsflags & dns.flags.DO
        # Denial of existence: NSEC, and NSEC3, with their signatures for DO only.
        for origin, kind in (("signed.test.", dns.rdatatype.NSEC),
                             ("nsec3.test.", dns.rdatatype.NSEC3)):
            nx = ask_msg(r, "nothing." + origin, do=True)
            assert nx.rcode() == dns.rcode.NXDOMAIN
            assert ("ns", kind) in dnssec_records(nx) and \
                ("ns", dns.rdatatype.RRSIG) in dnssec_records(nx)
            nx = ask_msg(r, "nothing." + origin)
            assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority
            assert not dnssec_records(nx)
        # A DNSSEC type asked for is the answer itself, with or without DO.
        dk = ask_msg(r, "signed.test.", "DNSKEY")
        assert dk.answer and dk.answer[0].rdtype == dns.rdatatype.DNSKEY
        assert not dnssec_records(dk)


def careless(q, transport):
    """An upstream that signs every answer and denial, whether DO was asked for or not."""
    r = dns.message.make_response(q)
    qn = q.question[0].name
    sig = ("A 13 3 300 20370101000000 20200101000000 4711 careless.test. "
           "dGVzdHNpZ25hdHVyZXRlc3RzaWduYXR1cmU=")
    r.answer.append(dns.rrset.from_text(qn, 300, "IN", "A", "192.0.2.77"))
    r.answer.append(dns.rrset.from_text(qn, 300, "IN", "RRSIG", sig))
    r.authority.append(dns.rrset.from_text("careless.test.", 300, "IN", "NS",
                                           "ns.careless.test."))
    r.authority.append(dns.rrset.from_text("careless.test.", 300, "IN", "NSEC",
                                           "zz.careless.test. NS SOA RRSIG NSEC"))
    r.additional.append(dns.rrset.from_text("ns.careless.test.", 300, "IN", "A", "192.0.2.53"))
    return r


def test_careless_upstream_records_removed(fault, rrcache):
    """An upstream that sends RRSIG and NSEC to a query without DO: rrcache takes them out
    before the answer is stored, so a client without DO never gets them (miss, hit, UDP, TCP),
    the rest of the answer intact; a client with DO gets all."""
    up = fault(careless)
    r = rrcache([f"127.0.0.1:{up.port}"])
    for rnd in range(2):
        for tcp in (False, True):
            m = ask_msg(r, "www.careless.test.", tcp=tcp)
            assert not dnssec_records(m), (rnd, tcp)
            assert len(m.answer) == 1 and m.answer[0][0].address == "192.0.2.77"
            assert len(m.authority) == 1 and m.authority[0].rdtype == dns.rdatatype.NS
            assert len(m.additional) == 1 and m.additional[0].rdtype == dns.rdatatype.A
            d = ask_msg(r, "www.careless.test.", do=True, tcp=tcp)
            assert sorted(dnssec_records(d)) == [("an", dns.rdatatype.RRSIG),
                                                 ("ns", dns.rdatatype.NSEC)]
    # Each key was asked upstream once: the rest were hits.
    assert len(up.seen) == 2
    rc, log = r.stop()
    assert "sent DNSSEC records to a query without DO; removed" in log


def test_validating_upstream(zones, validator, rrcache):
    """rrcache in front of a validating resolver (unbound): with upstream.trust_ad, a signed
    answer carries AD to a client that set DO or AD, not to one that set neither; a bogus
    answer (expired signatures) is SERVFAIL for CD=0 and the data for CD=1 (copied back, no
    AD), in either order, on misses and hits: a CD=1 answer never reaches a CD=0 client
    (RFC 6840 §5.9, the cache key C1). Without trust_ad no client gets AD."""
    ip = f"127.0.0.1:{validator.port}"
    trusted = rrcache([ip], upstream_extra="  trust_ad: true\n")
    plain = rrcache([ip])
    for rnd in range(2):
        for r, trust in ((trusted, True), (plain, False)):
            m = ask_msg(r, "www.signed.test.", do=True)
            assert bool(m.flags & dns.flags.AD) == trust
            assert ("an", dns.rdatatype.RRSIG) in dnssec_records(m)
            m = ask_msg(r, "www.signed.test.", ad=True)
            assert bool(m.flags & dns.flags.AD) == trust and not dnssec_records(m)
            m = ask_msg(r, "www.signed.test.")
            assert not m.flags & dns.flags.AD
            nx = ask_msg(r, "nothing.nsec3.test.", do=True)
            assert nx.rcode() == dns.rcode.NXDOMAIN and bool(nx.flags & dns.flags.AD) == trust
    r = trusted
    for rnd in range(2):
        # CD=0 first, then CD=1.
        m = ask_msg(r, "www.bogus.test.", do=True)
        assert m.rcode() == dns.rcode.SERVFAIL and not m.answer, rnd
        m = ask_msg(r, "www.bogus.test.", do=True, cd=True)
        assert m.rcode() == dns.rcode.NOERROR and m.flags & dns.flags.CD
        assert not m.flags & dns.flags.AD
        assert m.answer[0][0].address == "192.0.2.66"
        # CD=1 first (its answer cached), then CD=0: still SERVFAIL.
        m = ask_msg(r, "ftp.bogus.test.", cd=True)
        assert m.rcode() == dns.rcode.NOERROR and m.answer[0][0].address == "192.0.2.67"
        m = ask_msg(r, "ftp.bogus.test.")
        assert m.rcode() == dns.rcode.SERVFAIL and not m.answer, rnd


def test_remembered_failure_not_given_to_cd(fault, rrcache):
    """A name whose upstream queries failed is remembered as SERVFAIL for cache.servfail_ttl
    (RFC 2308 §7.1) under its own key: a client asking with CD=1 is not answered from it but
    asked upstream with CD=1 (RFC 6840 §5.9), and gets the answer."""
    dark = dns.name.from_text("dark.test.")

    def only_cd(q, transport):
        if q.question[0].name == dark and not q.flags & dns.flags.CD:
            return None  # silent: the query fails
        r = dns.message.make_response(q)  # the health probe (". NS") is answered too
        if q.question[0].name == dark:
            r.answer.append(dns.rrset.from_text(dark, 300, "IN", "A", "192.0.2.88"))
        return r

    def asked():
        return [s for s in up.seen if s.qname == dark]
    up = fault(only_cd)
    r = rrcache([f"127.0.0.1:{up.port}"],
                upstream_extra="  timeout: 200ms\n  client_timeout: 600ms\n",
                config_extra="cache:\n  servfail_ttl: 30\n")
    assert ask_msg(r, "dark.test.").rcode() == dns.rcode.SERVFAIL
    before = len(asked())
    assert ask_msg(r, "dark.test.").rcode() == dns.rcode.SERVFAIL
    assert len(asked()) == before  # remembered
    m = ask_msg(r, "dark.test.", cd=True)
    assert m.rcode() == dns.rcode.NOERROR and m.answer[0][0].address == "192.0.2.88"
    assert len(asked()) == before + 1
    assert dns.message.from_wire(asked()[-1].wire).flags & dns.flags.CD
    assert ask_msg(r, "dark.test.").rcode() == dns.rcode.SERVFAIL

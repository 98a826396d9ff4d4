"""DNSSEC-aware forwarding (not validating): DO and CD go upstream and split the cache; the AD
bit of upstream answers is kept only with upstream.trust_ad, and a client gets it only when
its query had DO or AD (RFC 6840 §5.8), on the miss and on every hit."""
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.rrset


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

"""Routing and local data through the real binary: upstream pools chosen by domain (the most
specific wins, a pool down gives SERVFAIL for its names only, --forward and RRCACHE_FORWARD,
reload), Redis keys kept apart by pool, local records and hosts files answered with AA and no
upstream query, private reverse zones answered NXDOMAIN unless a pool claims them."""
import json
import os
import subprocess

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from helpers import RRCACHE, free_port, query, wait_for


def answering(addr):
    """An upstream that answers every A query with addr (and PTR with host.upstream.test.)."""
    def handler(q, transport):
        r = dns.message.make_response(q)
        qn, rt = q.question[0].name, q.question[0].rdtype
        if rt == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(qn, 300, "IN", "A", addr))
        elif rt == dns.rdatatype.PTR:
            r.answer.append(dns.rrset.from_text(qn, 300, "IN", "PTR", "host.upstream.test."))
        return r
    return handler


def address(resp):
    assert resp.rcode() == dns.rcode.NOERROR, resp
    return resp.answer[-1][0].address


def pools_conf(*pools):
    text = "  pools:\n"
    for name, domains, ports in pools:
        servers = ", ".join('"127.0.0.1:%d"' % p for p in ports)
        text += (f"    - name: {name}\n      domains: [{', '.join(domains)}]\n"
                 f"      servers: [{servers}]\n")
    return text


def test_pools_route_by_domain(fault, rrcache):
    """Names under a pool's domain reach only that pool, the most specific domain winning;
    everything else the default pool; a pool claiming 10.in-addr.arpa gets those reverse
    names instead of the local NXDOMAIN; metrics and the API name each upstream's pool."""
    default, corp, lab = (fault(answering(a)) for a in ("192.0.2.1", "10.0.0.1", "10.9.0.1"))
    r = rrcache([f"127.0.0.1:{default.port}"],
                upstream_extra=pools_conf(("corp", ["corp.example", "10.in-addr.arpa"],
                                           [corp.port]),
                                          ("lab", ["lab.corp.example"], [lab.port])))
    cases = {"www.corp.example.": (corp, "10.0.0.1"), "Corp.Example.": (corp, "10.0.0.1"),
             "x.lab.corp.example.": (lab, "10.9.0.1"), "lab.corp.example.": (lab, "10.9.0.1"),
             "www.example.org.": (default, "192.0.2.1"), "xcorp.example.": (default, "192.0.2.1")}
    for name, (up, addr) in cases.items():
        assert address(r.query(name)) == addr, name
        for other in (default, corp, lab):
            assert other.count(name.lower()) == (1 if other is up else 0), (name, other.port)
    ptr = r.query("5.0.0.10.in-addr.arpa.", "PTR")
    assert ptr.rcode() == dns.rcode.NOERROR and corp.count("5.0.0.10.in-addr.arpa.") == 1
    m = r.metrics()
    assert m[("rrcache_upstream_queries_total",
              frozenset({("upstream", f"127.0.0.1:{lab.port}"), ("pool", "lab")}))] >= 2
    ups = json.loads(r.http("/api/v1/upstreams")[2])["upstreams"]
    assert [(u["address"], u["pool"]) for u in ups] == [
        (f"127.0.0.1:{default.port}", "default"), (f"127.0.0.1:{corp.port}", "corp"),
        (f"127.0.0.1:{lab.port}", "lab")]


def test_a_pool_down_fails_only_its_names(fault, rrcache):
    """A pool whose one server does not answer: its names get SERVFAIL within the client's
    budget, then at once once the server is down; the default pool keeps answering."""
    default = fault(answering("192.0.2.1"))
    dead = free_port()
    r = rrcache([f"127.0.0.1:{default.port}"],
                upstream_extra=pools_conf(("corp", ["corp.example"], [dead])) +
                "  timeout: 200ms\n  client_timeout: 600ms\n")
    for i in range(4):
        resp = r.query(f"h{i}.corp.example.")
        assert resp.rcode() == dns.rcode.SERVFAIL
        assert address(r.query(f"h{i}.example.org.")) == "192.0.2.1"
    assert wait_for(lambda: r.metrics()[
        ("rrcache_upstream_up", frozenset({("upstream", f"127.0.0.1:{dead}"),
                                           ("pool", "corp")}))] == 0)
    assert r.metrics()[("rrcache_upstream_up",
                        frozenset({("upstream", f"127.0.0.1:{default.port}"),
                                   ("pool", "default")}))] == 1


def test_forward_flag_and_environment(fault, rrcache, monkeypatch):
    """--forward makes pools without a file; RRCACHE_FORWARD splits at commas, an item
    without '=' adding to the domain before it."""
    default, corp, lan = (fault(answering(a)) for a in ("192.0.2.1", "10.0.0.1", "192.168.1.1"))
    r = rrcache([f"127.0.0.1:{default.port}"],
                args=["--forward", f"corp.example=127.0.0.1:{corp.port}"])
    assert address(r.query("a.corp.example.")) == "10.0.0.1"
    assert address(r.query("a.example.org.")) == "192.0.2.1"
    r.stop()
    corp2 = fault(answering("10.0.0.2"))
    monkeypatch.setenv("RRCACHE_FORWARD", f"corp.example=127.0.0.1:{corp.port},"
                       f"127.0.0.1:{corp2.port},lan=127.0.0.1:{lan.port}")
    r = rrcache([f"127.0.0.1:{default.port}"])
    assert address(r.query("printer.lan.")) == "192.168.1.1"
    seen = {address(r.query(f"b{i}.corp.example.")) for i in range(6)}
    assert seen == {"10.0.0.1", "10.0.0.2"}  # round-robin over the pool's two servers
    ups = json.loads(r.http("/api/v1/upstreams")[2])["upstreams"]
    assert sorted(u["pool"] for u in ups) == ["corp.example", "corp.example", "default", "lan"]
    bad = subprocess.run([RRCACHE, "--check-config", "--upstream", "192.0.2.1",
                          "--forward", "corp.example"], capture_output=True, text=True,
                         timeout=10, env={**os.environ, "RRCACHE_FORWARD": ""})
    assert bad.returncode == 1 and "--forward: want DOMAIN=ADDR" in bad.stderr


def test_reload_moves_a_pool_and_keeps_the_cache(fault, rrcache):
    """SIGHUP with a pool's server changed: its names go to the new server; answers cached
    before are still answered from the cache."""
    default, old, new = (fault(answering(a)) for a in ("192.0.2.1", "10.0.0.1", "10.0.0.2"))
    r = rrcache([f"127.0.0.1:{default.port}"],
                upstream_extra=pools_conf(("corp", ["corp.example"], [old.port])))
    assert address(r.query("one.corp.example.")) == "10.0.0.1"
    assert address(r.query("cached.example.org.")) == "192.0.2.1"
    with open(r.conf) as f:
        text = f.read()
    r.write_config(text.replace(f'"127.0.0.1:{old.port}"', f'"127.0.0.1:{new.port}"'))
    r.hup()
    assert wait_for(lambda: "configuration reloaded" in r.log())
    assert address(r.query("two.corp.example.")) == "10.0.0.2"
    assert old.count("two.corp.example.") == 0
    assert address(r.query("cached.example.org.")) == "192.0.2.1"
    assert default.count("cached.example.org.") == 1


def test_redis_keys_apart_by_pool(fault, rrcache, redis):
    """Two instances share Redis: one forwards corp.example to its pool, the other has no
    pool; neither gets the other's answer for the name. A third with a pool of the same name
    shares the first one's answer."""
    rd = redis()
    red = f'redis:\n  url: "{rd.url}"\n  key_secret: "k"\n'
    corp, default_b, corp_c = (fault(answering(a)) for a in ("10.0.0.1", "192.0.2.1", "10.0.0.3"))
    a = rrcache([f"127.0.0.1:{default_b.port}"], config_extra=red,
                upstream_extra=pools_conf(("corp", ["corp.example"], [corp.port])))
    b = rrcache([f"127.0.0.1:{default_b.port}"], config_extra=red)
    c = rrcache([f"127.0.0.1:{default_b.port}"], config_extra=red,
                upstream_extra=pools_conf(("corp", ["corp.example"], [corp_c.port])))
    assert address(a.query("www.corp.example.")) == "10.0.0.1"
    assert wait_for(lambda: len(rd.keys("rrc:*")) >= 1)
    assert address(b.query("www.corp.example.")) == "192.0.2.1"
    assert default_b.count("www.corp.example.") == 1
    assert address(c.query("www.corp.example.")) == "10.0.0.1"  # shared through Redis
    assert corp_c.count("www.corp.example.") == 0


def test_local_records_and_hosts_file(fault, rrcache, tmp_path):
    """Local records and hosts-file names: AA=1, no upstream query, over UDP and TCP; NODATA
    for another type; PTR from the hosts file; a changed hosts file read again."""
    up = fault(answering("192.0.2.1"))
    hosts = tmp_path / "hosts"
    hosts.write_text("192.168.1.30 nas files\n")
    conf = f"""local:
  records:
    - "printer.lan. 300 IN A 192.168.1.20"
    - "www.lan. CNAME printer.lan."
    - "_ipp._tcp.lan. SRV 0 0 631 printer.lan."
  hosts_files: ["{hosts}"]
  domain: lan
"""
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    for tcp in (False, True):
        resp = query(r.host, r.port, "WWW.lan.", tcp=tcp)
        assert resp.flags & dns.flags.AA and resp.rcode() == dns.rcode.NOERROR
        assert [rr.to_text() for rrs in resp.answer for rr in rrs] == ["printer.lan.",
                                                                       "192.168.1.20"]
        assert resp.question[0].name.to_text() == "WWW.lan."  # the client's case
    assert address(r.query("nas.")) == "192.168.1.30"
    assert address(r.query("files.lan.")) == "192.168.1.30"
    ptr = r.query("30.1.168.192.in-addr.arpa.", "PTR")
    assert ptr.flags & dns.flags.AA and ptr.answer[0][0].target.to_text() == "nas.lan."
    srv = r.query("_ipp._tcp.lan.", "SRV")
    assert srv.answer[0][0].port == 631
    nodata = r.query("printer.lan.", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    # With EDNS the answer carries rrcache's OPT, as a cache hit does.
    q = dns.message.make_query("printer.lan.", "A", use_edns=0)
    assert dns.query.udp(q, r.host, port=r.port, timeout=3).edns == 0
    assert up.count() == up.count(".")  # only the health probes reached the upstream
    assert address(r.query("other.lan.")) == "192.0.2.1"  # not local: forwarded
    m = r.metrics()
    assert m[("rrcache_local_answers_total", frozenset({("source", "records")}))] == 5
    assert m[("rrcache_local_answers_total", frozenset({("source", "hosts")}))] == 3
    # A new hosts file in place of the old one is read again once it stays the same.
    tmp = tmp_path / "hosts.new"
    tmp.write_text("192.168.1.30 nas files\n192.168.1.31 camera\n")
    os.rename(tmp, hosts)
    assert wait_for(lambda: f"{hosts} changed, reloading" in r.log(), deadline=6)
    assert wait_for(lambda: r.query("camera.lan.").rcode() == dns.rcode.NOERROR)
    assert address(r.query("camera.lan.")) == "192.168.1.31"


def test_private_reverse_answered_here(fault, rrcache):
    """RFC 6303: reverse names of private ranges get NXDOMAIN with the zone's SOA, never an
    upstream query; public ones are forwarded; private_reverse: false forwards them all."""
    up = fault(answering("192.0.2.1"))
    r = rrcache([f"127.0.0.1:{up.port}"])
    for name, zone in (("1.1.168.192.in-addr.arpa.", "168.192.in-addr.arpa."),
                       ("9.0.0.10.in-addr.arpa.", "10.in-addr.arpa."),
                       ("1.0.0.127.in-addr.arpa.", "127.in-addr.arpa."),
                       ("printer.home.arpa.", "home.arpa.")):
        resp = r.query(name, "PTR")
        assert resp.rcode() == dns.rcode.NXDOMAIN and resp.flags & dns.flags.AA, name
        assert resp.authority[0].name.to_text() == zone
        assert resp.authority[0].rdtype == dns.rdatatype.SOA
        assert up.count(name) == 0
    assert r.query("8.8.8.8.in-addr.arpa.", "PTR").rcode() == dns.rcode.NOERROR
    assert up.count("8.8.8.8.in-addr.arpa.") == 1
    m = r.metrics()
    assert m[("rrcache_local_answers_total", frozenset({("source", "empty_zone")}))] == 4
    r.stop()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra="local:\n  private_reverse: false\n")
    assert r.query("1.1.168.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.NOERROR
    assert up.count("1.1.168.192.in-addr.arpa.") == 1


def test_check_config_names_a_bad_record(tmp_path):
    conf = tmp_path / "rrcache.yaml"
    conf.write_text('upstream:\n  servers: [192.0.2.1]\nlocal:\n  records:\n'
                    '    - "ok.lan. A 192.0.2.1"\n    - "bad.lan. MX mail.lan."\n')
    out = subprocess.run([RRCACHE, "-c", str(conf), "--check-config"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 1
    assert f"{conf}:6:7: local.records: bad.lan. MX mail.lan.: " in out.stderr, out.stderr


def test_local_answers_in_dnstap(fault, rrcache, tmp_path):
    """A local answer and a private reverse NXDOMAIN reach the query log as client
    responses, with no forwarder message."""
    from test_dnstap import read_dnstap
    up = fault(answering("192.0.2.1"))
    path = str(tmp_path / "q.dnstap")
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=f'dnstap:\n  file: "{path}"\nlocal:\n'
                             '  records: ["printer.lan. A 192.168.1.20"]\n')
    assert r.query("printer.lan.").flags & dns.flags.AA
    assert r.query("4.3.2.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN
    rc, log = r.stop()
    assert rc == 0, log
    docs = [d for d in read_dnstap(path).split("---") if d.strip()]
    for name, rcode in (("printer.lan.", "NOERROR"), ("4.3.2.10.in-addr.arpa.", "NXDOMAIN")):
        resp = [d for d in docs if "type: CLIENT_RESPONSE" in d and name in d]
        assert len(resp) == 1 and rcode in resp[0] and " aa" in resp[0], resp
    assert not [d for d in docs if "FORWARDER" in d and ("printer.lan." in d or "10.in-addr" in d)]

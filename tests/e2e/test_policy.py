"""Domain block and allow lists through the real binary: every format, each block response,
precedence, reload (a list that cannot be read keeps the previous one), metrics, and a list of
a million names."""
import os
import time

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from helpers import query, wait_for



LIST = """# hosts, plain, adblock, wildcard
0.0.0.0 hosts.blocked.test
plain.blocked.test
||adblock.blocked.test^
*.wild.blocked.test
@@||fine.adblock.blocked.test^
this line is unreadable
"""


def policy_conf(tmp_path, block=LIST, allow=None, response="nxdomain", ttl=60):
    b = tmp_path / "block.txt"
    b.write_text(block)
    text = f'policy:\n  blocklists: ["{b}"]\n  block_response: {response}\n  block_ttl: {ttl}\n'
    if allow is not None:
        a = tmp_path / "allow.txt"
        a.write_text(allow)
        text += f'  allowlists: ["{a}"]\n'
    return text


def test_formats_precedence_and_nxdomain(fault, rrcache, tmp_path):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=policy_conf(tmp_path, allow="allowed.plain.blocked.test\n"))
    blocked = ["hosts.blocked.test.", "plain.blocked.test.", "www.plain.blocked.test.",
               "adblock.blocked.test.", "x.adblock.blocked.test.", "a.wild.blocked.test.",
               "HOSTS.Blocked.TEST."]
    passed = ["sub.hosts.blocked.test.", "wild.blocked.test.", "fine.adblock.blocked.test.",
              "allowed.plain.blocked.test.", "www.allowed.plain.blocked.test.",
              "other.test."]
    for name in blocked:
        resp = r.query(name)
        assert resp.rcode() == dns.rcode.NXDOMAIN, name
        assert not resp.answer
        soa = resp.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 60 and soa[0].minimum == 60
        assert soa.name.to_text().lower() == name.lower()
        # The client's own case and ID are kept.
        assert resp.question[0].name.to_text() == name
    for name in passed:
        assert r.query(name).rcode() == dns.rcode.NOERROR, name
    seen = {s.qname.to_text().lower() for s in up.seen}
    assert not seen & {n.lower() for n in blocked}
    assert {n.lower() for n in passed} <= seen
    m = r.metrics()
    lists = {dict(lab)["list"] for (name, lab) in m if name == "rrcache_policy_rules"}
    blk = str(tmp_path / "block.txt")
    assert m[("rrcache_policy_answers_total",
              frozenset({("action", "blocked"), ("list", blk)}))] == len(blocked)
    # fine.adblock (an exception in the blocklist) and the allowlist's two names.
    assert m[("rrcache_policy_answers_total",
              frozenset({("action", "allowed"), ("list", blk)}))] == 1
    assert m[("rrcache_policy_answers_total",
              frozenset({("action", "allowed"), ("list", str(tmp_path / "allow.txt"))}))] == 2
    assert m[("rrcache_policy_rules", frozenset({("list", blk), ("kind", "block")}))] == 5
    assert m[("rrcache_policy_unreadable_lines", frozenset({("list", blk)}))] == 1
    assert len(lists) == 2
    log = r.log()
    assert f"{blk}:7: more than one word" in log
    assert "policy: 6 rules from 2 list(s)" in log


@pytest.mark.parametrize("response", ["nodata", "null", "refused"])
def test_block_responses(fault, rrcache, tmp_path, response):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=policy_conf(tmp_path, response=response, ttl=30))
    a = r.query("plain.blocked.test.", "A")
    aaaa = r.query("plain.blocked.test.", "AAAA")
    mx = r.query("plain.blocked.test.", "MX")
    if response == "refused":
        for resp in (a, aaaa, mx):
            assert resp.rcode() == dns.rcode.REFUSED and not resp.answer
        return
    for resp in (a, aaaa, mx):
        assert resp.rcode() == dns.rcode.NOERROR
    if response == "null":
        assert a.answer[0][0].address == "0.0.0.0" and a.answer[0].ttl == 30
        assert aaaa.answer[0][0].address == "::" and aaaa.answer[0].ttl == 30
        assert not mx.answer and mx.authority[0].ttl == 30
    else:
        for resp in (a, aaaa, mx):
            assert not resp.answer and resp.authority[0].rdtype == dns.rdatatype.SOA
    # Over TCP too, and without EDNS.
    t = query(r.host, r.port, "plain.blocked.test.", "A", tcp=True)
    assert t.rcode() == a.rcode() and len(t.answer) == len(a.answer)
    plain = query(r.host, r.port, "plain.blocked.test.", "A", use_edns=False)
    assert plain.edns == -1 and plain.rcode() == a.rcode()


def test_reload_keeps_lists_that_cannot_be_read(fault, rrcache, tmp_path):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=policy_conf(tmp_path))
    assert r.query("plain.blocked.test.").rcode() == dns.rcode.NXDOMAIN
    blk = tmp_path / "block.txt"
    # The file gone: the reload keeps the lists loaded before.
    os.rename(blk, tmp_path / "moved.txt")
    r.hup()
    assert wait_for(lambda: "the lists loaded before stay in force" in r.log())
    assert wait_for(lambda: "configuration reloaded" in r.log())
    assert r.query("plain.blocked.test.").rcode() == dns.rcode.NXDOMAIN
    # A new file: the next reload takes it.
    blk.write_text("other.blocked.test\n")
    r.hup()
    assert wait_for(lambda: r.log().count("configuration reloaded") == 2)
    assert r.query("plain.blocked.test.").rcode() == dns.rcode.NOERROR
    assert r.query("other.blocked.test.").rcode() == dns.rcode.NXDOMAIN


def test_flags_and_check_config(fault, tmp_path):
    import subprocess
    from helpers import RRCACHE, free_port, wait_answering
    up = fault()
    b = tmp_path / "b.txt"
    b.write_text("flag.blocked.test\nbad line here\n")
    a = tmp_path / "a.txt"
    a.write_text("ok.flag.blocked.test\n")
    port = free_port()
    args = [RRCACHE, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{up.port}",
            "--metrics", "off", "--blocklist", str(b), "--allowlist", str(a)]
    chk = subprocess.run(args + ["--check-config"], capture_output=True, text=True, timeout=10)
    assert chk.returncode == 0 and f"{b}:2: more than one word" in chk.stderr
    missing = subprocess.run(args[:-4] + ["--blocklist", str(tmp_path / "none.txt"),
                                          "--check-config"],
                             capture_output=True, text=True, timeout=10)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    # A start with a list that cannot be read stops with the reason.
    start = subprocess.run(args[:-4] + ["--blocklist", str(tmp_path / "none.txt")],
                           capture_output=True, text=True, timeout=10)
    assert start.returncode == 1 and "none.txt" in start.stderr
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_answering(port, proc=p)
        assert query("127.0.0.1", port, "x.flag.blocked.test.").rcode() == dns.rcode.NXDOMAIN
        assert query("127.0.0.1", port, "ok.flag.blocked.test.").rcode() == dns.rcode.NOERROR
    finally:
        p.terminate()
        assert p.wait(10) == 0, p.stderr.read()


def test_a_million_names(fault, rrcache, tmp_path):
    """A list of a million names built here: loaded, every sampled name blocked, and the
    process's memory grown by at most 40 bytes a name (loosely: the bench measures it)."""
    up = fault()
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        for i in range(1000000):
            f.write(f"n{i}.tracker{i % 997}.example\n")
    r0 = rrcache([f"127.0.0.1:{up.port}"])
    base = r0.metrics()[("process_resident_memory_bytes", frozenset())]
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=f'policy:\n  blocklists: ["{big}"]\n')
    rss = r.metrics()[("process_resident_memory_bytes", frozenset())]
    assert "policy: 1000000 rules from 1 list(s)" in r.log()
    for i in range(0, 1000000, 99991):
        assert r.query(f"n{i}.tracker{i % 997}.example.").rcode() == dns.rcode.NXDOMAIN
    assert r.query("n1.tracker2.example.").rcode() == dns.rcode.NOERROR
    assert rss - base <= 40 * 1000000, (rss - base)


def cname_answer(q, t):
    """cloak*.test. -> CNAME to a name on the list (and its A), others the default."""
    import dns.rrset
    from helpers import default_answer
    name = q.question[0].name.to_text()
    if not name.startswith(("cloak", "okcloak")):
        return default_answer(q)
    r = dns.message.make_response(q)
    target = "edge.plain.blocked.test."
    r.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", target))
    if q.question[0].rdtype == dns.rdatatype.A:
        r.answer.append(dns.rrset.from_text(target, 300, "IN", "A", "192.0.2.66"))
    return r


def test_cname_cloaking(fault, rrcache, tmp_path):
    """A name that is not on the list but answers with a CNAME to one that is, is blocked:
    on the miss (every client waiting on it) and on the hits after it; a name allowed outright
    is not."""
    import threading
    up = fault(cname_answer)
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=policy_conf(tmp_path, allow="okcloak.test\n"))
    # Two clients at once on the same miss.
    results = []
    ts = [threading.Thread(target=lambda: results.append(r.query("cloak.test."))) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for resp in results + [r.query("cloak.test."), r.query("Cloak.Test.")]:
        assert resp.rcode() == dns.rcode.NXDOMAIN and not resp.answer
        assert resp.authority[0].rdtype == dns.rdatatype.SOA
    assert results[0].question[0].name.to_text() == "cloak.test."
    assert up.count("cloak.test.") == 1  # one upstream query, then the cache
    ok = r.query("okcloak.test.")
    assert ok.rcode() == dns.rcode.NOERROR and ok.answer
    m = r.metrics()
    blk = str(tmp_path / "block.txt")
    assert m[("rrcache_policy_answers_total",
              frozenset({("action", "blocked"), ("list", blk)}))] == 4


def ask_from(r, source, name, rdtype="A"):
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, r.host, port=r.port, timeout=3, source=source)


def test_client_groups(fault, rrcache, tmp_path):
    """Groups by client network, the longest prefix deciding: kids (127.0.0.2) get an extra
    list on top of the global one, servers (127.0.0.3/32 inside 127.0.0.0/24) get none, and a
    client in no group (127.0.0.1) the global list only; a CNAME to a kids-only name is
    blocked for kids only. Clients are told apart by their source address."""
    import dns.query
    up = fault(cname_answer)
    (tmp_path / "kids.txt").write_text("games.test\nedge.plain.blocked.test\n")
    (tmp_path / "global.txt").write_text("ads.test\n")
    conf = f"""policy:
  blocklists: ["{tmp_path / 'global.txt'}"]
  groups:
    - name: kids
      clients: [127.0.0.2/32, 127.0.0.0/24]
      blocklists: ["{tmp_path / 'kids.txt'}"]
    - name: servers
      clients: [127.0.0.3]
      use_global: false
acl:
  allow: [127.0.0.0/8]
"""
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    NX, OK = dns.rcode.NXDOMAIN, dns.rcode.NOERROR
    expect = {  # source: (ads.test, games.test, cloak.test)
        "127.0.0.1": (NX, NX, NX),  # 127.0.0.0/24 is kids too
        "127.0.0.2": (NX, NX, NX),
        "127.0.0.3": (OK, OK, OK),  # /32 beats /24; no lists at all
        "127.0.1.1": (NX, OK, OK),  # in no group: the global list
    }
    for src, (ads, games, cloak) in expect.items():
        assert ask_from(r, src, "ads.test.").rcode() == ads, src
        assert ask_from(r, src, "games.test.").rcode() == games, src
        assert ask_from(r, src, "cloak.test.").rcode() == cloak, src
    m = r.metrics()
    g = {dict(lab)["group"]: v for (n, lab), v in m.items()
         if n == "rrcache_policy_group_blocked_total"}
    assert g == {"default": 1, "kids": 6, "servers": 0}
    # A group without clients or name is refused at start.
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  groups:\n    - name: x\n")
    import subprocess
    from helpers import RRCACHE
    out = subprocess.run([RRCACHE, "-c", str(bad), "--check-config", "--upstream", "127.0.0.1"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "a group needs a name and clients" in out.stderr


def test_list_file_change_reloads(fault, rrcache, tmp_path):
    """A list file that changes is read again without a SIGHUP, once it has stayed the same
    for a second (not half-written)."""
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=policy_conf(tmp_path))
    assert r.query("new.blocked.test.").rcode() == dns.rcode.NOERROR
    blk = tmp_path / "block.txt"
    tmp = tmp_path / "block.tmp"
    tmp.write_text(LIST + "new.blocked.test\n")
    os.rename(tmp, blk)  # as list updaters do: a new file over the old
    assert wait_for(lambda: f"{blk} changed, reloading" in r.log(), deadline=6)
    assert wait_for(lambda: "configuration reloaded" in r.log())
    assert r.query("new.blocked.test.").rcode() == dns.rcode.NXDOMAIN
    assert r.log().count("changed, reloading") == 1


def burst_from(r, source, names):
    """Sends every query at once from source, then reads what comes back within a second:
    (answers with TC=1, full answers)."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(1.0)
    for i, n in enumerate(names):
        q = dns.message.make_query(n, "A")
        q.id = i
        s.sendto(q.to_wire(), (r.host, r.port))
    tc = full = 0
    try:
        while True:
            resp = dns.message.from_wire(s.recv(4096))
            if resp.flags & dns.flags.TC:
                tc += 1
            else:
                full += 1
    except socket.timeout:
        pass
    s.close()
    return tc, full


def test_rate_limit_with_slip(fault, rrcache):
    """One client at about 20 times its limit: its burst is answered, then one limited query
    in two gets TC=1 and the other nothing; a TC answer followed by TCP gets the answer;
    another prefix is not affected; an exempt network is never limited."""
    import dns.flags
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra="ratelimit:\n  qps: 20\n  slip: 2\n  exempt: [127.0.9.0/24]\n"
                             "acl:\n  allow: [127.0.0.0/8]\n")
    # Warm the cache first so that every answer below is a hit (hits are limited too).
    names = [f"h{i}.rl.test." for i in range(400)]
    for n in names[:20]:
        assert query(r.host, r.port, n, tcp=True).rcode() == dns.rcode.NOERROR
    # A prefix no one used yet (the start-up probes came from 127.0.0.1: the same /24 as
    # 127.0.0.2, which would find its bucket short of what they took).
    t0 = time.monotonic()
    tc, full = burst_from(r, "127.0.5.2", names)
    elapsed = time.monotonic() - t0
    limited = 400 - full
    # The burst (20) and what refilled while the burst was sent.
    assert 20 <= full <= 20 + 20 * elapsed + 2, (full, elapsed)
    assert abs(tc - limited / 2) <= 1, (tc, limited)
    m = r.metrics()
    dropped = m[("rrcache_ratelimit_total", frozenset({("action", "dropped")}))]
    slipped = m[("rrcache_ratelimit_total", frozenset({("action", "slipped")}))]
    assert slipped == tc and dropped + slipped == limited
    # The TC answer sends a real client to TCP, where it is answered.
    t = query(r.host, r.port, names[5], tcp=True)
    assert t.rcode() == dns.rcode.NOERROR and t.answer
    # Another /24 and an exempt network: all answered.
    assert burst_from(r, "127.0.1.1", names[:15]) == (0, 15)
    assert burst_from(r, "127.0.9.1", names[:100]) == (0, 100)


@pytest.mark.parametrize("mode", ["hinfo", "tc", "forward"])
def test_any_over_udp(fault, rrcache, mode):
    """RFC 8482: ANY over UDP gets one HINFO "RFC8482" (default), or TC=1, or is forwarded;
    over TCP it is always forwarded."""
    import dns.flags
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=f"policy:\n  any_udp: {mode}\n")
    resp = r.query("any.test.", "ANY")
    asked = up.count("any.test.")
    if mode == "hinfo":
        assert resp.rcode() == dns.rcode.NOERROR and not resp.flags & dns.flags.TC
        rr = resp.answer[0]
        assert rr.rdtype == dns.rdatatype.HINFO and rr.ttl == 3600
        assert rr[0].cpu == b"RFC8482" and rr[0].os == b""
        assert asked == 0
    elif mode == "tc":
        assert resp.flags & dns.flags.TC and not resp.answer and asked == 0
    else:
        assert not resp.flags & dns.flags.TC and asked == 1
    t = query(r.host, r.port, "any2.test.", "ANY", tcp=True)
    assert up.count("any2.test.") == 1 and t.rcode() == dns.rcode.NOERROR
    m = r.metrics()
    assert m[("rrcache_any_udp_total", frozenset())] == (0 if mode == "forward" else 1)


def test_top_blocked_names(fault, rrcache, tmp_path):
    """The most blocked names: a top-K table of their own in /api/v1/top and /metrics."""
    import json
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=policy_conf(tmp_path),
                stats_extra="  top_sample: 1\n")
    for i in range(5):
        r.query("plain.blocked.test.")
    r.query("x.adblock.blocked.test.")
    r.query("fine.test.")
    # Published once a second.
    assert wait_for(lambda: len(json.loads(r.http("/api/v1/top")[2])["blocked"]) >= 2)
    rows = {e["key"]: e["count"] for e in json.loads(r.http("/api/v1/top")[2])["blocked"]}
    assert rows.get("plain.blocked.test.") == 5 and rows.get("x.adblock.blocked.test.") == 1
    assert "fine.test." not in rows
    m = r.metrics()
    assert any(n == "rrcache_top_queries" and dict(lab).get("table") == "blocked"
               for (n, lab) in m)

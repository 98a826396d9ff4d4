"""The statistics endpoint: /metrics, the JSON API, top-K, health, its ACL and token."""
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time

import dns.message
import dns.name
import dns.query
import dns.rcode
import pytest

from helpers import free_port, query, raw_udp, wait_for

TOP_EXACT = "  top_sample: 1\n"


def metric(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)



def test_counters_equal_what_was_sent(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    m0 = r.metrics()
    j0 = json.loads(r.http("/api/v1/stats")[2])
    for i in range(7):
        query(r.host, r.port, f"a{i}.test.", "A")
    for i in range(3):
        query(r.host, r.port, f"aaaa{i}.test.", "AAAA", tcp=True)
    for i in range(4):
        query(r.host, r.port, f"mx{i}.test.", "MX")
    for i in range(5):
        query(r.host, r.port, f"nx{i}.test.", "A", tcp=(i % 2 == 0))
    formerr = struct.pack("!HHHHHH", 0x1234, 0x0100, 0, 0, 0, 0)  # QDCOUNT=0
    for _ in range(2):
        assert raw_udp(r.host, r.port, formerr) is not None
    badvers = dns.message.make_query("v1.test.", "A")
    badvers.use_edns(edns=1)  # EDNS version 1
    assert dns.query.udp(badvers, r.host, port=r.port, timeout=3).rcode() == dns.rcode.BADVERS
    m1 = r.metrics()
    j1 = json.loads(r.http("/api/v1/stats")[2])

    def d(name, **labels):
        return metric(m1, name, **labels) - metric(m0, name, **labels)
    assert d("rrcache_queries_total", transport="udp") == 7 + 4 + 2 + 2 + 1
    assert d("rrcache_queries_total", transport="tcp") == 3 + 3
    assert d("rrcache_queries_by_type_total", qtype="A") == 7 + 5
    assert d("rrcache_queries_by_type_total", qtype="AAAA") == 3
    assert d("rrcache_queries_by_type_total", qtype="MX") == 4
    assert d("rrcache_responses_total", rcode="NOERROR") == 7 + 3 + 4
    assert d("rrcache_responses_total", rcode="NXDOMAIN") == 5
    assert d("rrcache_responses_total", rcode="FORMERR") == 2
    assert d("rrcache_responses_total", rcode="BADVERS") == 1
    assert d("rrcache_malformed_queries_total", reason="qdcount") == 2
    assert d("rrcache_upstream_queries_total", upstream=f"127.0.0.1:{up.port}", pool="default") == 19
    assert d("rrcache_response_latency_seconds_count") == 22
    # The JSON API says the same.
    assert j1["queries"]["udp"] - j0["queries"]["udp"] == 16
    assert j1["queries"]["tcp"] - j0["queries"]["tcp"] == 6
    assert j1["rcodes"]["NXDOMAIN"] - j0["rcodes"]["NXDOMAIN"] == 5
    assert j1["qtypes"]["MX"] - j0["qtypes"]["MX"] == 4
    # Cached: a second round of the A names is all hits.
    hits0 = metric(m1, "rrcache_cache_requests_total", result="hit")
    for i in range(7):
        query(r.host, r.port, f"a{i}.test.", "A")
    m2 = r.metrics()
    assert metric(m2, "rrcache_cache_requests_total", result="hit") - hits0 == 7
    assert metric(m2, "rrcache_cache_entries") >= 7


def test_histograms_are_consistent(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    for i in range(20):
        r.query(f"h{i % 5}.test.")
    _, _, body = r.http("/metrics")
    text = body.decode()
    for fam in ("rrcache_response_latency_seconds", "rrcache_upstream_rtt_seconds"):
        series = {}
        for line in text.splitlines():
            m = re.match(rf'^{fam}_bucket\{{(.*?)le="([^"]+)"\}} (\d+)$', line)
            if m:
                series.setdefault(m.group(1), []).append((m.group(2), int(m.group(3))))
        assert series, fam
        for labels, buckets in series.items():
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), buckets  # cumulative
            assert buckets[-1][0] == "+Inf"
            lab = labels.rstrip(",")
            count = re.search(rf'^{fam}_count{"{" + lab + "}" if lab else ""} (\d+)$', text,
                              re.M)
            assert count and int(count.group(1)) == counts[-1], (fam, labels)
    m = r.metrics()
    assert metric(m, "rrcache_response_latency_seconds_count") >= 20
    assert metric(m, "rrcache_upstream_rtt_seconds_count", upstream=f"127.0.0.1:{up.port}",
                  pool="default") == 5
    assert metric(m, "rrcache_upstream_rtt_seconds_sum", upstream=f"127.0.0.1:{up.port}",
                  pool="default") > 0


HOSTILE = [dns.name.Name([b'q"uote', b"test", b""]),
           dns.name.Name([b"back\\slash", b"test", b""]),
           dns.name.Name([b"ctl\x01\x0a\x7f", b"test", b""]),
           dns.name.Name([b"<script>alert(1)<", b"script>", b""]),
           dns.name.Name([b"\xff\xfe\xc3", b"test", b""]),
           dns.name.Name([b"x" * 63, b"y" * 63, b"z" * 63, b"w" * 61, b""])]


def test_hostile_names_keep_outputs_valid(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra=TOP_EXACT)
    for n in HOSTILE:
        for _ in range(3):
            query(r.host, r.port, n)
    # Published once a second.
    assert wait_for(lambda: len(json.loads(r.http("/api/v1/top")[2])["names"]) >= 6, 5)
    top = json.loads(r.http("/api/v1/top")[2])  # valid JSON, or this raises
    keys = {e["key"] for e in top["names"]}
    for n in HOSTILE:
        assert n.to_text() in keys, (n.to_text(), keys)
    # JSON never carries "</" (safe in a page) nor raw control bytes.
    raw = r.http("/api/v1/top")[2]
    assert b"</" not in raw and not re.search(rb"[\x00-\x1f]", raw.replace(b"\n", b""))
    m = r.metrics()  # parses: every line is name{labels} value
    shown = {dict(k[1])["key"] for k in m if k[0] == "rrcache_top_queries" and
             dict(k[1])["table"] == "names"}
    assert len(shown) >= 6
    promtool = shutil.which("promtool")
    if promtool:
        out = subprocess.run([promtool, "check", "metrics"], input=r.http("/metrics")[2],
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_metrics(fault, rrcache, redis):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus"
    up = fault()
    rd = redis()
    r = rrcache([f"127.0.0.1:{up.port}", f"127.0.0.1:{free_port()}"],
                config_extra=f'redis:\n  url: "{rd.url}"\n')
    for i in range(10):
        r.query(f"p{i}.test.")
    body = r.http("/metrics")[2]
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                         timeout=30)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    text = body.decode()
    # Every family has HELP and TYPE; every sample belongs to a declared family.
    declared = set(re.findall(r"^# TYPE (\w+) \w+$", text, re.M))
    helped = set(re.findall(r"^# HELP (\w+) ", text, re.M))
    assert declared == helped
    for name in re.findall(r"^(\w+)[{ ]", text, re.M):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in declared or base in declared, name
    assert "rrcache_redis_requests_total" in declared
    assert 'rrcache_build_info{version="' in text


def test_top_k_ranks_names_and_clients(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra=TOP_EXACT + "  top_k: 3\n")
    for name, n in (("hot.test.", 30), ("warm.test.", 10), ("cold.test.", 3), ("ice.test.", 1)):
        for _ in range(n):
            r.query(name)
    for _ in range(4):
        query(r.host, r.port, "nxthing.test.")

    def names():
        return json.loads(r.http("/api/v1/top?window=1m")[2])
    assert wait_for(lambda: names()["names"] and names()["names"][0]["count"] == 30, 5)
    t = names()
    assert [e["key"] for e in t["names"]] == ["hot.test.", "warm.test.", "nxthing.test."]
    assert [e["count"] for e in t["names"]] == [30, 10, 4]
    assert t["clients"][0]["key"] == "127.0.0.1"
    assert t["nxdomain"][0] == {"key": "nxthing.test.", "count": 4, "error": 0}
    assert json.loads(r.http("/api/v1/top?window=1h")[2])["names"][0]["key"] == "hot.test."
    assert r.http("/api/v1/top?window=1d")[0] == 400
    m = r.metrics()
    assert metric(m, "rrcache_top_queries", table="names", window="1m", rank="1",
                  key="hot.test.") == 30
    # Capped at top_k per table.
    assert sum(1 for k in m if k[0] == "rrcache_top_queries" and
               dict(k[1])["table"] == "names" and dict(k[1])["window"] == "1m") == 3


def test_health_and_readiness(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    assert r.http("/healthz")[0] == 200
    assert r.http("/readyz")[0] == 200
    dead = rrcache([f"127.0.0.1:{free_port()}"],
                   upstream_extra="  max_failures: 1\n  probe_interval: 10s\n")
    assert dead.http("/healthz")[0] == 200
    query(dead.host, dead.port, "down.test.", timeout=3)  # refused: marks it down
    assert wait_for(lambda: dead.http("/readyz")[0] == 503)
    ups = json.loads(dead.http("/api/v1/upstreams")[2])["upstreams"]
    assert ups[0]["up"] is False and ups[0]["errors"] >= 1


def test_writes_need_the_token(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra='  token: "s3cret-token"\n')
    r.query("flushme.test.")
    r.query("flushme.test.")
    assert up.count("flushme.test.") == 1
    assert r.http("/api/v1/cache/flush", "POST", body="name=flushme.test")[0] == 401
    bad = {"Authorization": "Bearer wrong", "Content-Type": "application/x-www-form-urlencoded"}
    assert r.http("/api/v1/cache/flush", "POST", body="name=flushme.test", headers=bad)[0] == 401
    good = {"Authorization": "Bearer s3cret-token",
            "Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = r.http("/api/v1/cache/flush", "POST", body="name=FlushMe.test",
                             headers=good)
    assert status == 200, body
    assert json.loads(body) == {"flushed": "name", "l1_entries_removed": 1}
    r.query("flushme.test.")
    assert up.count("flushme.test.") == 2
    assert r.http("/api/v1/cache/flush", "POST", headers=good)[0] == 400  # say what
    status, _, body = r.http("/api/v1/cache/flush", "POST", body="all=1", headers=good)
    assert status == 200 and json.loads(body)["flushed"] == "all"
    assert r.http("/api/v1/top/reset", "POST", headers=good)[0] == 200
    assert r.http("/api/v1/cache/flush", "POST", body="x" * 5000, headers=good)[0] == 413
    assert r.http("/metrics", "DELETE")[0] == 405
    assert r.http("/nope")[0] == 404
    # Without a configured token, writes are off.
    plain = rrcache([f"127.0.0.1:{up.port}"])
    assert plain.http("/api/v1/cache/flush", "POST", headers=good)[0] == 403


@pytest.mark.parametrize("how", ["body", "query"])
@pytest.mark.parametrize("bad", ["%zzbad.example.", "%00x", "www.%GGexample.", "a%0", "x y."])
def test_flush_with_a_bad_name_flushes_nothing(fault, rrcache, bad, how):
    """A name that does not decode cleanly is a 400 and flushes nothing (it used to flush
    everything, or the name's broken-off start)."""
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra='  token: "t"\n')
    r.query("www.example.")
    r.query("kept.test.")
    good = {"Authorization": "Bearer t", "Content-Type": "application/x-www-form-urlencoded"}
    if how == "body":
        status = r.http("/api/v1/cache/flush", "POST", body=f"name={bad}", headers=good)[0]
    else:
        status = r.http(f"/api/v1/cache/flush?name={bad.replace(' ', '+')}", "POST",
                        headers=good)[0]
    assert status == 400
    r.query("www.example.")
    r.query("kept.test.")
    assert up.count() == 2, "something was flushed"


def test_slow_clients_cannot_keep_health_probes_out(fault, rrcache):
    """Clients trickling their requests a byte at a time hold every slot (stats.max_connections
    4, and more than the 8 a client may have): /healthz and /metrics still answer at once,
    each taking the slot of the slowest request. (They were unreachable for 17 s and more.)"""
    import threading
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra="  max_connections: 4\n")
    stop = threading.Event()
    socks = []

    def trickle(s):
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            if stop.is_set():
                return
            try:
                s.sendall(bytes([b]))
            except OSError:
                return
            stop.wait(0.3)
    threads = []
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", r.stats_port))
        socks.append(s)
        t = threading.Thread(target=trickle, args=(s,))
        t.start()
        threads.append(t)
        time.sleep(0.05)
    try:
        for path in ("/healthz", "/metrics", "/healthz"):
            t0 = time.monotonic()
            assert r.http(path, timeout=3)[0] == 200
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for s in socks:
            s.close()


def test_reload_changes_token_and_top_k(fault, rrcache):
    """stats.token and stats.top_k are read at each request: a reload changes them."""
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra='  token: "old-token"\n  top_k: 5\n' +
                "  top_sample: 1\n")
    for i in range(8):
        r.query(f"t{i}.top.test.")
    old = {"Authorization": "Bearer old-token"}
    new = {"Authorization": "Bearer new-token"}
    assert wait_for(lambda: len(json.loads(r.http("/api/v1/top")[2])["names"]) == 5)
    r.write_config(open(r.conf).read().replace('token: "old-token"', 'token: "new-token"')
                   .replace("top_k: 5", "top_k: 3"))
    r.hup()
    assert wait_for(lambda: "configuration reloaded" in r.log())
    assert len(json.loads(r.http("/api/v1/top")[2])["names"]) == 3
    assert r.http("/api/v1/top/reset", "POST", headers=old)[0] == 401
    assert r.http("/api/v1/top/reset", "POST", headers=new)[0] == 200


def test_clients_outside_the_stats_acl_are_refused(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra="  allow: [10.0.0.0/8]\n")
    with pytest.raises((ConnectionError, OSError)):
        status = r.http("/metrics", timeout=2)[0]
        raise ConnectionError(f"answered {status}")
    # The DNS side is unaffected.
    assert r.query("acl.test.").rcode() == dns.rcode.NOERROR


def test_stats_port_taken_is_reported(fault):
    """A statistics address that cannot be bound stops the start with the reason (exit 1)."""
    from helpers import RRCACHE
    up = fault()
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = free_port()
    hog.bind(("127.0.0.1", port))
    hog.listen()
    try:
        p = subprocess.run([RRCACHE, "--listen", f"127.0.0.1:{free_port()}", "--upstream",
                            f"127.0.0.1:{up.port}", "--metrics", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 1
        assert f"cannot serve statistics on 127.0.0.1:{port} (stats.listen)" in p.stderr
    finally:
        hog.close()


def test_sidecar_from_flags_alone_opens_stats_to_a_probe(fault):
    """No file: --metrics on the wildcard and --stats-allow let a probe from another address
    (127.0.0.2 here, standing for a kubelet or Prometheus) read /healthz and /metrics, and
    --stats-allow replaces the loopback default: 127.0.0.1 is refused."""
    import http.client
    from helpers import RRCACHE, wait_answering
    up = fault()
    dport, mport = free_port(), free_port()
    p = subprocess.Popen([RRCACHE, "--listen", f"127.0.0.1:{dport}", "--upstream",
                          f"127.0.0.1:{up.port}", "--metrics", f"0.0.0.0:{mport}",
                          "--stats-allow", "127.0.0.2/32", "--stats-allow", "192.0.2.0/24",
                          "--log-level", "warning"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def get(path, source):
        c = http.client.HTTPConnection("127.0.0.1", mport, timeout=3,
                                       source_address=(source, 0))
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()
    try:
        wait_answering(dport, proc=p)
        assert get("/healthz", "127.0.0.2")[0] == 200
        status, body = get("/metrics", "127.0.0.2")
        assert status == 200 and b"rrcache_queries_total" in body
        with pytest.raises((ConnectionError, OSError)):
            status = get("/metrics", "127.0.0.1")[0]
            raise ConnectionError(f"answered {status}")
    finally:
        p.terminate()
        assert p.wait(10) == 0, p.stderr.read()


def test_process_metrics(fault, rrcache):
    """The process metrics of Prometheus's client libraries, with the same names: CPU time,
    memory, descriptors, start time, each plausible for this process."""
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    for i in range(20):
        r.query(f"proc{i}.test.")
    m = r.metrics()
    one = lambda n: m[(n, frozenset())]
    assert abs(one("process_start_time_seconds") - time.time()) < 120
    assert one("process_resident_memory_bytes") > 1 << 20
    assert one("process_virtual_memory_bytes") >= one("process_resident_memory_bytes")
    with open(f"/proc/{r.proc.pid}/limits") as f:
        soft = [line.split()[3] for line in f if line.startswith("Max open files")][0]
    assert one("process_max_fds") == float(soft)
    assert 5 <= one("process_open_fds") <= len(os.listdir(f"/proc/{r.proc.pid}/fd")) + 2
    assert one("process_cpu_seconds_total") >= 0

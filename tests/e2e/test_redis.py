"""The Redis tier (L2): a fleet of rrcache instances sharing one real redis-server."""
import re
import time

import dns.rcode
import dns.rdatatype
import pytest

from helpers import default_answer, query, wait_for


def redis_conf(url, extra="", timeout="500ms", secret="fleet secret"):
    # A deadline far above loopback round trips, even in the sanitizer build on a loaded
    # machine: tests of sharing must not see a lookup given up (the default, 20 ms, is for
    # production; the tests of deadlines set their own).
    sec = f'  key_secret: "{secret}"\n' if secret else ""
    return f"""redis:
  url: "{url}"
  key_prefix: "t:"
{sec}  timeout: {timeout}
{extra}"""


def totals(log):
    m = re.search(r"totals: redis (.*)", log)
    assert m, log
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}



def test_second_instance_answers_from_redis_with_aged_ttl(fault, rrcache, redis):
    up = fault()
    rd = redis()
    a = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    b = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    # Both data connections ready (a's "ready" alone is the listener's, not Redis's).
    assert wait_for(lambda: "Redis connection ready" in a.log() and
                    "Redis connection ready" in b.log())
    ra = a.query("shared.test.")
    assert ra.answer[0][0].address == "192.0.2.7"
    assert ra.answer[0].ttl == 300
    assert up.count("shared.test.") == 1
    assert wait_for(lambda: len(rd.keys("t:*")) == 1)
    key = rd.keys("t:*")[0]
    # No name in the key: the prefix, then two keyed hashes.
    assert re.fullmatch(rb"t:[0-9a-f]{16}:[0-9a-f]{16}", key), key
    time.sleep(2.1)
    rb_ = b.query("shared.test.")
    assert rb_.rcode() == dns.rcode.NOERROR
    assert rb_.answer[0][0].address == "192.0.2.7"
    assert rb_.answer[0].ttl <= 298
    assert up.count("shared.test.") == 1, "the second instance asked the upstream"
    # Now in b's L1: still no upstream query, same answer.
    assert b.query("SHARED.test.").answer[0][0].address == "192.0.2.7"
    assert up.count("shared.test.") == 1
    _, log = b.stop()
    t = totals(log)
    assert t["hits"] == 1 and t["bad"] == 0


def timed_query(r, name, timeout=2.0):
    t0 = time.monotonic()
    resp = query(r.host, r.port, name, timeout=timeout)
    return resp, time.monotonic() - t0


def test_redis_absent_at_start_then_used(fault, rrcache, redis):
    """Redis down at start: queries are answered from the upstream at once; once Redis comes,
    the tier connects (backoff) and fills it."""
    from helpers import free_port
    up = fault()
    port = free_port()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=redis_conf(f"redis://127.0.0.1:{port}",
                                        "  backoff_min: 50ms\n  backoff_max: 200ms\n"))
    for i in range(5):
        resp, took = timed_query(r, f"absent{i}.test.")
        assert resp.rcode() == dns.rcode.NOERROR
        assert took < 0.5
    rd = redis(port=port)
    assert wait_for(lambda: "Redis connection ready" in r.log(), 5)
    r.query("present.test.")
    assert wait_for(lambda: len(rd.keys("t:*")) == 1)
    log = r.log()
    # Down is said once, not at every retry.
    assert log.count("Redis connection down") == 1, log


def test_redis_killed_under_load_and_restarted(fault, rrcache, redis):
    """Kill -9 Redis while four clients query (hits and misses): no query fails or waits for
    Redis; after a restart on the same port the tier is used again."""
    import concurrent.futures
    import threading
    up = fault()
    rd = redis()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=redis_conf(rd.url, "  backoff_min: 50ms\n  backoff_max: 200ms\n"))
    assert wait_for(lambda: "Redis connection ready" in r.log())
    done = [0]
    lock = threading.Lock()

    def client(c):
        worst = 0.0
        for i in range(120):
            resp, took = timed_query(r, f"load{c}-{i % 60}.test.")
            assert resp.rcode() == dns.rcode.NOERROR
            worst = max(worst, took)
            with lock:
                done[0] += 1
        return worst
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(client, c) for c in range(4)]
        assert wait_for(lambda: done[0] >= 160, 30)
        rd.kill()
        assert wait_for(lambda: done[0] >= 320, 30)
        rd.start()
        worst = max(f.result() for f in futs)
    # Misses take the upstream's time plus at most the Redis deadline (20 ms); 0.5 s leaves
    # room for a loaded machine, far below a client's retry.
    assert worst < 0.5, worst
    assert wait_for(lambda: "Redis connection ready again" in r.log(), 5), r.log()
    r.query("after-restart.test.")
    assert wait_for(lambda: len(rd.keys("t:*")) >= 1)


def test_redis_slow_does_not_slow_queries(fault, rrcache, redis):
    """DEBUG SLEEP blocks Redis for a second: cached queries are as fast as before, misses wait
    at most the Redis deadline, and the breaker opens after max_failures timeouts."""
    import threading
    up = fault()
    rd = redis()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=redis_conf(rd.url, "  max_failures: 3\n", timeout="20ms"))
    assert wait_for(lambda: "Redis connection ready" in r.log())
    for i in range(20):
        r.query(f"hot{i}.test.")

    def lat(names):
        out = []
        for n in names:
            resp, took = timed_query(r, n)
            assert resp.rcode() == dns.rcode.NOERROR
            out.append(took)
        out.sort()
        return out
    before = lat([f"hot{i % 20}.test." for i in range(200)])
    sleeper = threading.Thread(target=lambda: rd.cmd("DEBUG", "SLEEP", "1.5"))
    sleeper.start()
    time.sleep(0.1)
    during = lat([f"hot{i % 20}.test." for i in range(200)])
    misses = lat([f"slowmiss{i}.test." for i in range(10)])
    sleeper.join()
    p99 = lambda xs: xs[int(len(xs) * 0.99) - 1]
    # Cached answers never touch Redis: the same p99 within scheduling noise.
    assert p99(during) < max(3 * p99(before), 0.05), (before[-5:], during[-5:])
    assert misses[-1] < 0.5, misses
    assert "circuit open" in r.log()
    _, log = r.stop()
    t = totals(log)
    assert t["timeouts"] >= 3 and t["breaker_opens"] >= 1, t


@pytest.mark.parametrize("secret", ["", "fleet secret"])
def test_hostile_values_are_misses(fault, rrcache, redis, secret):
    """Whatever sits under a key is checked: garbage, truncated, another question's value, a
    pointer loop, an expired value are all refused (counted), answered from the upstream, and
    overwritten by the next fill. Without key_secret each is refused by its own check (the
    expired one is an expired miss); with one, every value whose seal the fleet did not write
    is refused first, the re-dated expired one included."""
    import struct
    up = fault()
    rd = redis()
    conf = redis_conf(rd.url, "  fleet_coalescing: false\n", secret=secret)
    a = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    assert wait_for(lambda: "Redis connection ready" in a.log())
    # A fleet without a key_secret is warned about once, at start.
    assert ("no key_secret" in a.log()) == (not secret)
    names = ["garbage", "short", "other", "loop", "expired", "victim"]
    keys = {}
    for n in names:
        a.query(f"{n}.test.")
        assert wait_for(lambda: len(rd.keys("t:*")) == len(keys) + 1)
        keys[n] = [k for k in rd.keys("t:*") if k not in keys.values()][0]
    good = {n: rd.cmd("GET", keys[n]) for n in names}
    assert good["victim"][:4] == b"RRCL"
    hdr = 28
    klen = struct.unpack("!H", good["loop"][6:8])[0]
    rd.cmd("SET", keys["garbage"], bytes(range(256)) * 3)
    rd.cmd("SET", keys["short"], good["short"][:len(good["short"]) - 7])
    rd.cmd("SET", keys["other"], good["victim"])
    # A name compression pointer to itself in the answer's first record.
    ans = bytearray(good["loop"][hdr + klen:])
    qend = 12 + len(b"\x04loop\x04test\x00") + 4
    ans[qend:qend + 2] = struct.pack("!H", 0xC000 | qend)
    rd.cmd("SET", keys["loop"], good["loop"][:hdr + klen] + bytes(ans))
    # Stored and expired an hour ago.
    old = bytearray(good["expired"])
    now = int(time.time() * 1000)
    struct.pack_into("!QIQ", old, 8, now - 3600_000 - 300_000, 300, now - 3600_000)
    rd.cmd("SET", keys["expired"], bytes(old))

    b = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    assert wait_for(lambda: "Redis connection ready" in b.log())
    for n in names[:-1]:
        resp = b.query(f"{n}.test.")
        assert resp.rcode() == dns.rcode.NOERROR
        assert resp.answer[0][0].address == "192.0.2.7"
        assert resp.answer[0].name.to_text() == f"{n}.test."
        assert up.count(f"{n}.test.") == 2, n
    # Overwritten by the fill that followed.
    assert wait_for(lambda: all(rd.cmd("GET", keys[n])[:4] == b"RRCL" and
                                rd.cmd("GET", keys[n]) != good["victim"]
                                for n in names[:-1]))
    _, log = b.stop()
    t = totals(log)
    if secret:
        assert t["bad"] == 5 and t["expired"] == 0 and t["hits"] == 0, t
    else:
        assert t["bad"] == 4 and t["expired"] == 1 and t["hits"] == 0, t


def test_hostile_names_never_shape_a_command(fault, rrcache, redis):
    """Names with spaces, CR/LF, '*', NUL and 255 octets: MONITOR sees exactly the GET, lock and
    SET per name, each with a hashed key; no name bytes reach Redis."""
    import dns.name
    from helpers import RedisClient
    up = fault()
    rd = redis()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    assert wait_for(lambda: "Redis connection ready" in r.log())
    mon = RedisClient(port=rd.port)
    assert mon.cmd("MONITOR") == "OK"
    long_labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]  # 255 octets with the root
    names = [dns.name.Name([b"sp ace", b"test", b""]),
             dns.name.Name([b"cr\r\nlf", b"test", b""]),
             dns.name.Name([b"*", b"test", b""]),
             dns.name.Name([b"nu\x00l", b"test", b""]),
             dns.name.Name([b"quote\"'", b"test", b""]),
             dns.name.Name(long_labels + [b""])]
    assert len(names[-1].to_wire()) == 255
    for n in names:
        resp = query(r.host, r.port, n)
        assert resp.rcode() == dns.rcode.NOERROR
    time.sleep(0.3)
    mon.sock.settimeout(0.5)
    lines = []
    try:
        while True:
            lines.append(mon.reply())
    except OSError:
        pass
    mon.close()
    cmds = [l for l in lines if isinstance(l, str) and '"' in l]
    verbs = [re.search(r'\] "(\w+)"', l).group(1).upper() for l in cmds]
    assert verbs.count("GET") == len(names), cmds
    assert verbs.count("SET") == 2 * len(names), cmds  # the lock and the fill
    assert len(verbs) == 3 * len(names), cmds
    for l in cmds:
        # The key is hashed; the name is only inside the SET's value (the answer's wire),
        # one binary-safe argument.
        m = re.search(r'\] "(\w+)" "([^"]*)"', l)
        assert re.fullmatch(r"t:(lock:)?[0-9a-f]{16}:[0-9a-f]{16}", m.group(2)), l
        if m.group(1).upper() == "GET":
            assert re.fullmatch(r'.*\] "GET" "[^"]*"', l), l


def test_maxmemory_eviction_is_harmless(fault, rrcache, redis):
    up = fault()
    rd = redis()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    assert wait_for(lambda: "Redis connection ready" in r.log())
    base = int(re.search(r"used_memory:(\d+)", rd.cmd("INFO", "memory").decode()).group(1))
    # Room for about a thousand values: the fills below evict.
    rd.cmd("CONFIG", "SET", "maxmemory", base + 300_000)
    rd.cmd("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    for i in range(2000):
        assert r.query(f"evict{i}.test.").rcode() == dns.rcode.NOERROR
    info = rd.cmd("INFO", "stats").decode()
    assert int(re.search(r"evicted_keys:(\d+)", info).group(1)) > 0
    _, log = r.stop()
    t = totals(log)
    assert t["errors"] == 0 and t["breaker_opens"] == 0, t


def test_fleet_coalescing_one_upstream_query(fault, rrcache, redis):
    """Two instances, 20 concurrent identical misses each: one upstream query for the fleet."""
    import concurrent.futures
    import threading

    def handler(q, t):
        return [("sleep", 0.3), default_answer(q)]
    up = fault(handler)
    rd = redis()
    a = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url, "  fleet_wait: 1s\n"))
    b = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url, "  fleet_wait: 1s\n"))
    assert wait_for(lambda: "Redis connection ready" in a.log() and
                    "Redis connection ready" in b.log())
    barrier = threading.Barrier(40)

    def ask(i):
        srv = a if i % 2 else b
        barrier.wait()
        return query(srv.host, srv.port, "fleet.test.", timeout=3)
    with concurrent.futures.ThreadPoolExecutor(40) as ex:
        results = list(ex.map(ask, range(40)))
    assert all(x.answer[0][0].address == "192.0.2.7" for x in results)
    assert up.count("fleet.test.") == 1


def test_fleet_flush(fault, rrcache, redis):
    """rrcache --flush NAME removes it from Redis and from every instance's L1; --flush-all
    everything."""
    import subprocess
    from helpers import RRCACHE
    import dns.rrset

    def handler(q, t):
        r = default_answer(q)
        if q.question[0].rdtype == dns.rdatatype.AAAA:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "AAAA",
                                                "2001:db8::7"))
        return r
    up = fault(handler)
    rd = redis()
    a = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    b = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    assert wait_for(lambda: "listening for fleet flushes" in a.log() and
                    "listening for fleet flushes" in b.log())
    for n in ("gone.test.", "kept.test."):
        a.query(n)
        b.query(n)
        b.query(n, "AAAA")
    assert up.count("gone.test.") == 2  # A and AAAA
    assert wait_for(lambda: len(rd.keys("t:*")) == 4)
    out = subprocess.run([RRCACHE, "-c", a.conf, "--flush", "GONE.test"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "2 key(s) deleted" in out.stdout, out.stdout
    assert len(rd.keys("t:*")) == 2
    assert wait_for(lambda: "fleet flush of one name" in a.log() and
                    "fleet flush of one name" in b.log())
    a.query("gone.test.")
    b.query("gone.test.")
    assert up.count("gone.test.") >= 3  # asked again (b may find a's fresh fill in Redis)
    b.query("kept.test.")
    a.query("kept.test.")
    assert up.count("kept.test.") == 2
    out = subprocess.run([RRCACHE, "-c", a.conf, "--flush-all"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert wait_for(lambda: "L1 emptied" in a.log() and "L1 emptied" in b.log())
    assert rd.keys("t:*") == [] or all(k.startswith(b"t:") for k in rd.keys("t:*"))
    b.query("kept.test.")
    assert up.count("kept.test.") == 3


def test_unix_socket_password_file_and_db(fault, rrcache, redis, tmp_path):
    up = fault()
    rd = redis(password="s3cret pass")
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    conf = f"""redis:
  url: "unix://{rd.sock}?db=3"
  password_file: "{pw}"
  key_prefix: "u:"
"""
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    assert wait_for(lambda: "Redis connection ready" in r.log()), r.log()
    r.query("unix.test.")
    c = rd.client()
    c.cmd("SELECT", 3)
    assert wait_for(lambda: len(c.cmd("KEYS", "u:*")) == 1)
    c.close()
    assert "s3cret" not in r.log()


def test_wrong_password_is_reported_and_queries_still_answered(fault, rrcache, redis):
    up = fault()
    rd = redis(password="right")
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=redis_conf(f"redis://:wrong@127.0.0.1:{rd.port}"))
    assert wait_for(lambda: "set-up refused" in r.log()), r.log()
    assert r.query("nopass.test.").rcode() == dns.rcode.NOERROR
    assert "wrong" not in r.log().replace("WRONGPASS", "")


def test_fleet_flush_through_the_api(fault, rrcache, redis):
    """POST /api/v1/cache/flush on one instance flushes Redis and every instance's L1."""
    import json
    up = fault()
    rd = redis()
    token = '  token: "t0k"\n'
    a = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url), stats_extra=token)
    b = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url), stats_extra=token)
    assert wait_for(lambda: "listening for fleet flushes" in a.log() and
                    "listening for fleet flushes" in b.log())
    a.query("api-flush.test.")
    assert wait_for(lambda: len(rd.keys("t:[0-9a-f]*")) == 1)
    b.query("api-flush.test.")  # from Redis, now in b's L1
    assert up.count("api-flush.test.") == 1
    status, _, body = a.http("/api/v1/cache/flush", "POST", body="name=api-flush.test",
                             headers={"Authorization": "Bearer t0k",
                                      "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, body
    res = json.loads(body)
    assert res["redis_keys_deleted"] == 1 and res["l1_entries_removed"] == 1
    assert rd.keys("t:[0-9a-f]*") == []
    assert wait_for(lambda: "fleet flush of one name" in b.log())
    b.query("api-flush.test.")
    assert up.count("api-flush.test.") == 2


def test_acl_user_in_the_url(fault, rrcache, redis):
    """redis://user:password@host/db: AUTH with a user (Redis 6 ACL), SELECT of the db."""
    up = fault()
    rd = redis()
    rd.cmd("ACL", "SETUSER", "dnsfleet", "on", ">p@ss word", "~*", "&*", "+@all")
    rd.cmd("ACL", "SETUSER", "default", "off")
    url = f"redis://dnsfleet:p%40ss%20word@127.0.0.1:{rd.port}/2"
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(url))
    assert wait_for(lambda: "Redis connection ready" in r.log() and
                    "listening for fleet flushes" in r.log()), r.log()
    r.query("acl-user.test.")
    from helpers import RedisClient
    c = RedisClient(port=rd.port)
    c.cmd("AUTH", "dnsfleet", "p@ss word")
    c.cmd("SELECT", 2)
    assert wait_for(lambda: len(c.cmd("KEYS", "t:*")) == 1)
    c.close()
    assert "p@ss" not in r.log()


def test_pending_commands_are_bounded(fault, rrcache, redis):
    """With Redis stuck, no more than redis.max_pending commands wait per worker: further
    lookups skip Redis at once (counted) and go upstream."""
    import concurrent.futures
    import threading
    up = fault()
    rd = redis()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=redis_conf(rd.url, "  max_pending: 2\n  max_failures: 100\n",
                                        timeout="300ms"))
    assert wait_for(lambda: "Redis connection ready" in r.log())
    sleeper = threading.Thread(target=lambda: rd.cmd("DEBUG", "SLEEP", "1"))
    sleeper.start()
    time.sleep(0.1)
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        took = list(ex.map(lambda i: timed_query(r, f"pending{i}.test.")[1], range(10)))
    sleeper.join()
    # Two waited for the 300 ms deadline; the eight others did not wait for Redis at all.
    assert sorted(took)[7] < 0.25, took
    _, log = r.stop()
    t = totals(log)
    assert t["skipped"] >= 8 and t["timeouts"] >= 1, t


def test_reload_bounds_apply_to_values_from_redis(fault, rrcache, redis):
    """A reload's TTL bounds also bound what the Redis tier accepts: it reads the
    configuration in force, not a copy made at start."""
    up = fault()  # answers with TTL 300
    rd = redis()
    a = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    b = rrcache([f"127.0.0.1:{up.port}"], config_extra=redis_conf(rd.url))
    assert wait_for(lambda: "Redis connection ready" in a.log() and
                    "Redis connection ready" in b.log())
    assert a.query("bounds.test.").answer[0].ttl == 300
    assert wait_for(lambda: len(rd.keys("t:[0-9a-f]*")) == 1)
    # b lowers max_ttl by a reload, then takes the answer from Redis.
    b.write_config(open(b.conf).read() + "cache:\n  max_ttl: 60\n")
    b.hup()
    assert wait_for(lambda: "configuration reloaded" in b.log())
    r = b.query("bounds.test.")
    assert up.count("bounds.test.") == 1, "b asked the upstream, not Redis"
    assert r.answer[0][0].address == "192.0.2.7"
    assert r.answer[0].ttl <= 60, r.answer[0].ttl
    # And what b caches in L1 from it lives 60 s at most, like anything it caches now.
    assert b.query("bounds.test.").answer[0].ttl <= 60
    _, log = b.stop()
    assert totals(log)["hits"] == 1


def test_api_flush_waits_off_the_http_thread(fault, rrcache):
    """A fleet flush through the API waits for Redis on a thread of its own: while Redis does
    not answer, the endpoint keeps serving scrapes, a second flush is refused at once, and a
    stop interrupts the flush and exits promptly."""
    import socket
    import threading
    up = fault()
    # A "Redis" that takes connections and never answers.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    held, done = [], threading.Event()

    def accept():
        while not done.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass
    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        r = rrcache([f"127.0.0.1:{up.port}"],
                    config_extra=redis_conf(f"redis://127.0.0.1:{srv.getsockname()[1]}"),
                    stats_extra='  token: "t0k"\n')
        auth = {"Authorization": "Bearer t0k"}
        result = {}

        def flush():
            try:
                result["status"] = r.http("/api/v1/cache/flush", "POST", body="all=1",
                                          headers=auth, timeout=60)[0]
            except OSError as e:
                result["status"] = e
        first = threading.Thread(target=flush)
        first.start()
        assert wait_for(lambda: "cache flush (all) from the API" in r.log())
        t0 = time.monotonic()
        assert r.http("/metrics")[0] == 200
        assert r.http("/healthz")[0] == 200
        assert time.monotonic() - t0 < 1.0, "the scrape waited for the flush"
        status, _, body = r.http("/api/v1/cache/flush", "POST", body="all=1", headers=auth)
        assert status == 503, body
        assert first.is_alive(), "the first flush should still be waiting on Redis"
        t0 = time.monotonic()
        r.stop()  # exit 0 checked
        assert time.monotonic() - t0 < 5.0
        first.join(10)
        assert not first.is_alive()
    finally:
        done.set()
        acceptor.join(5)
        for c in held:
            c.close()
        srv.close()

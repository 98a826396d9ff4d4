"""Redis Sentinel: rrcache asks the sentinels where the master is, confirms it with ROLE, and
follows a failover (+switch-master) with every worker, while no client query fails and the
fleet's sharing resumes on the new master."""
import threading
import time

import dns.rcode

from helpers import FakeRedis, SentinelSet, fleet_redis_conf, free_port, metric, query, wait_for


def sentinel_conf(sentinel_ports, name="rrc", extra=""):
    items = "".join(f'    - "127.0.0.1:{p}"\n' for p in sentinel_ports)
    return fleet_redis_conf(f'  sentinels:\n{items}  master_name: "{name}"\n', extra)


def fake_sentinel(port):
    """A sentinel that names 127.0.0.1:port as the master and takes the subscription."""
    def handler(args):
        cmd = args[0].upper()
        if cmd == b"SENTINEL":
            return b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n" % (len(str(port)), port)
        if cmd == b"SUBSCRIBE":
            return b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n"
        return b"-ERR unknown\r\n"
    return FakeRedis(handler=handler)


def hits(r):
    return r.metrics().get(("rrcache_redis_requests_total", frozenset({("result", "hit")})), 0)


def test_failover_followed_without_failed_queries(fault, rrcache):
    up = fault()
    ss = SentinelSet()
    try:
        conf = sentinel_conf(ss.ports)
        a = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf, workers=2)
        b = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
        for r, workers in ((a, 2), (b, 1)):
            assert wait_for(lambda: metric(r, "rrcache_redis_up") == workers and
                            metric(r, "rrcache_redis_sentinel_up") == 1, 10), r.log()
        assert f'master "rrc" is at 127.0.0.1:{ss.master.port}' in a.log()
        # Sharing through the master the sentinels named.
        for i in range(20):
            assert a.query(f"before{i}.test.").rcode() == dns.rcode.NOERROR
        assert wait_for(lambda: len(ss.master.keys("t:*")) >= 20)
        for i in range(20):
            assert b.query(f"before{i}.test.").rcode() == dns.rcode.NOERROR
        assert hits(b) == 20
        assert up.count() == 20

        # Clients keep asking (new names and cached ones) through the failover.
        failed, answered, stop = [], [0], threading.Event()

        def ask(r, tag):
            i = 0
            while not stop.is_set() and i < 5000:
                name = f"during-{tag}-{i % 300}.test."
                try:
                    resp = query(r.host, r.port, name, timeout=2.0)
                    if resp.rcode() != dns.rcode.NOERROR:
                        failed.append((name, dns.rcode.to_text(resp.rcode())))
                    answered[0] += 1
                except Exception as e:  # noqa: BLE001 - any failure is one
                    failed.append((name, repr(e)))
                i += 1
                time.sleep(0.005)
        threads = [threading.Thread(target=ask, args=(r, t)) for r, t in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        try:
            old = ss.master.port
            ss.master.kill()
            assert wait_for(lambda: ss.master_port() == ss.replica.port, 30), ss.log()
            switched = time.monotonic()
            # Every worker of both instances on the new master within one backoff (1 s),
            # with room for a loaded machine.
            for r, workers in ((a, 2), (b, 1)):
                assert wait_for(lambda: metric(r, "rrcache_redis_up") == workers, 10), r.log()
            took = time.monotonic() - switched
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not failed, failed[:10]
        assert answered[0] > 100
        assert took < 5, took
        for r in (a, b):
            assert metric(r, "rrcache_redis_master_changes_total") == 1
            assert (f'master "rrc" moved from 127.0.0.1:{old} to '
                    f'127.0.0.1:{ss.replica.port}') in r.log()
        # Sharing resumes on the new master.
        before = hits(b)
        for i in range(20):
            assert a.query(f"after{i}.test.").rcode() == dns.rcode.NOERROR
        assert wait_for(lambda: len(ss.replica.keys("t:*")) >= 20)
        for i in range(20):
            assert b.query(f"after{i}.test.").rcode() == dns.rcode.NOERROR
        assert hits(b) - before == 20
    finally:
        ss.stop()


def test_dead_sentinel_and_replica_address_refused(fault, rrcache):
    """The first sentinel is down, the second names the replica (a sentinel behind): ROLE
    refuses it, the watcher asks the next sentinel, and rrcache settles on the master."""
    up = fault()
    ss = SentinelSet()
    behind = None
    try:
        rp = ss.replica.port

        behind = fake_sentinel(rp)
        dead = free_port()
        r = rrcache([f"127.0.0.1:{up.port}"],
                    config_extra=sentinel_conf([dead, behind.port, ss.ports[0]]))
        assert wait_for(lambda: metric(r, "rrcache_redis_up") == 1 and
                        f"127.0.0.1:{rp} is not the master (ROLE: slave)" in r.log(), 15), \
            r.log()
        log = r.log()
        assert f"Redis Sentinel 127.0.0.1:{dead}: connect" in log
        assert f'moved from 127.0.0.1:{rp} to 127.0.0.1:{ss.master.port}' in log
        assert r.query("settled.test.").rcode() == dns.rcode.NOERROR
        assert wait_for(lambda: len(ss.master.keys("t:*")) == 1)
    finally:
        if behind:
            behind.stop()
        ss.stop()


def test_flush_and_db_through_sentinel(fault, rrcache):
    """redis.db with Sentinel: the values go to that database of the master the sentinels
    name; the fleet flush (POST /api/v1/cache/flush) asks the sentinels too, and the flush
    subscription listens on that master."""
    import json
    up = fault()
    ss = SentinelSet()

    def keys():
        c = ss.master.client()
        try:
            c.cmd("SELECT", 2)
            return c.cmd("KEYS", "t:*")
        finally:
            c.close()
    try:
        r = rrcache([f"127.0.0.1:{up.port}"],
                    config_extra=sentinel_conf(ss.ports, extra="  db: 2\n"),
                    stats_extra='  token: "t0k"\n')
        assert wait_for(lambda: metric(r, "rrcache_redis_up") == 1 and
                        "listening for fleet flushes" in r.log(), 10), r.log()
        for i in range(5):
            r.query(f"flush{i}.test.")
        assert wait_for(lambda: len(keys()) == 5)
        assert ss.master.keys("t:*") == []  # not database 0
        status, _, body = r.http("/api/v1/cache/flush", "POST", body="name=flush0.test",
                                 headers={"Authorization": "Bearer t0k",
                                          "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
        assert json.loads(body)["redis_keys_deleted"] == 1
        assert len(keys()) == 4
        r.query("flush0.test.")
        assert up.count("flush0.test.") == 2
    finally:
        ss.stop()


def test_master_with_many_replicas(fault, rrcache):
    """A master whose ROLE lists 40 replicas (more elements than an ordinary reply may have)
    is accepted as the master."""
    up = fault()
    replica = b"*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6390\r\n$1\r\n0\r\n"

    def master(args):
        cmd = args[0].upper()
        if cmd == b"ROLE":
            return b"*3\r\n$6\r\nmaster\r\n:0\r\n*40\r\n" + replica * 40
        if cmd == b"SUBSCRIBE":
            return b"*3\r\n$9\r\nsubscribe\r\n$9\r\nt:flush\r\n:1\r\n"
        return b"$-1\r\n" if cmd == b"GET" else b"+OK\r\n"
    m = FakeRedis(handler=master)

    s = fake_sentinel(m.port)
    try:
        r = rrcache([f"127.0.0.1:{up.port}"], config_extra=sentinel_conf([s.port]))
        assert wait_for(lambda: metric(r, "rrcache_redis_up") == 1, 10), r.log()
        assert "protocol error" not in r.log()
    finally:
        s.stop()
        m.stop()

"""Redis Cluster: rrcache reads the slot map from its seeds, sends each key to its slot's
master (a value and its lock on one node), follows MOVED and ASK while slots migrate, and
moves on when a master dies and its replica takes over, with no client query failing; the
fleet flush reaches every master."""
import json
import subprocess
import threading
import time

import dns.rcode

from helpers import RedisCluster, fleet_redis_conf, metric, query, wait_for


def cluster_conf(seeds, extra=""):
    items = "".join(f'    - "127.0.0.1:{p}"\n' for p in seeds)
    return fleet_redis_conf(f"  cluster: true\n  nodes:\n{items}", extra)


def hits(r):
    return metric(r, "rrcache_redis_requests_total", result="hit")


class Load:
    """Clients asking two instances (new names and repeated ones) until stopped; every
    answer that is not NOERROR, and every timeout, is a failure."""

    def __init__(self, instances, tag):
        self.failed, self.answered, self.stop_ = [], 0, threading.Event()
        self.threads = [threading.Thread(target=self.ask, args=(r, f"{tag}{i}"))
                        for i, r in enumerate(instances)]
        for t in self.threads:
            t.start()

    def ask(self, r, tag):
        i = 0
        while not self.stop_.is_set() and i < 20000:
            name = f"load-{tag}-{i % 400}.test."
            try:
                resp = query(r.host, r.port, name, timeout=2.0)
                if resp.rcode() != dns.rcode.NOERROR:
                    self.failed.append((name, dns.rcode.to_text(resp.rcode())))
                self.answered += 1
            except Exception as e:  # noqa: BLE001 - any failure is one
                self.failed.append((name, repr(e)))
            i += 1
            time.sleep(0.002)

    def stop(self):
        self.stop_.set()
        for t in self.threads:
            t.join(30)


def test_cluster_sharing_migration_and_failover(fault, rrcache):
    up = fault()
    cl = RedisCluster()
    try:
        seeds = list(cl.masters())
        token = '  token: "t0k"\n'
        a = rrcache([f"127.0.0.1:{up.port}"], config_extra=cluster_conf(seeds), workers=2,
                    stats_extra=token)
        b = rrcache([f"127.0.0.1:{up.port}"], config_extra=cluster_conf(seeds[:1]))
        for r, workers in ((a, 2), (b, 1)):
            assert wait_for(lambda: metric(r, "rrcache_redis_up") == workers, 15), r.log()
        assert "3 masters serve 16384 of 16384 slots" in a.log()
        # Sharing: the keys spread over the masters, each value with its tag.
        for i in range(60):
            assert a.query(f"spread{i}.test.").rcode() == dns.rcode.NOERROR
        assert wait_for(lambda: sum(len(k) for k in cl.keys("t:{*").values()) == 60)
        per = cl.keys("t:{*")
        assert all(len(k) >= 5 for k in per.values()), {p: len(k) for p, k in per.items()}
        for i in range(60):
            assert b.query(f"spread{i}.test.").rcode() == dns.rcode.NOERROR
        assert hits(b) == 60
        assert up.count() == 60

        # Slots migrate (with their keys) under client load: MOVED and ASK are followed.
        load = Load([a, b], "m")
        try:
            time.sleep(1)
            ids = cl.masters()
            src, dst = list(ids.values())[:2]
            out = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{seeds[0]}",
                                  "--cluster-from", src, "--cluster-to", dst,
                                  "--cluster-slots", "2000", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
            time.sleep(1)
        finally:
            load.stop()
        assert not load.failed, load.failed[:10]
        assert load.answered > 200
        redirects = sum(metric(r, "rrcache_redis_cluster_redirects_total", kind=k)
                        for r in (a, b) for k in ("moved", "ask"))
        assert redirects > 0
        for r, workers in ((a, 2), (b, 1)):
            assert wait_for(lambda: metric(r, "rrcache_redis_up") == workers, 10), r.log()

        # A master dies; its replica takes over; rrcache reads the new map.
        load = Load([a, b], "f")
        try:
            time.sleep(0.5)
            victim = next(p for p in cl.masters() if p != seeds[0])
            cl.node(victim).kill()
            # Under a loaded machine the election may take a few rounds of the node timeout.
            assert wait_for(lambda: len(cl.masters()) == 3 and victim not in cl.masters() and
                            cl.healthy(), 60), "no failover: " + cl.log()
            for r, workers in ((a, 2), (b, 1)):
                assert wait_for(lambda: metric(r, "rrcache_redis_up") == workers, 10), \
                    r.log()
            time.sleep(0.5)
        finally:
            load.stop()
        assert not load.failed, load.failed[:10]
        assert f"127.0.0.1:{victim} left the slot map" in b.log()  # a keeps it: a seed
        # Sharing resumes.
        before = hits(b)
        for i in range(30):
            assert a.query(f"after{i}.test.").rcode() == dns.rcode.NOERROR
        time.sleep(0.5)
        for i in range(30):
            assert b.query(f"after{i}.test.").rcode() == dns.rcode.NOERROR
        assert hits(b) - before == 30

        # The fleet flush reaches every master: one name, then everything.
        status, _, body = a.http("/api/v1/cache/flush", "POST", body="name=spread1.test",
                                 headers={"Authorization": "Bearer t0k",
                                          "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
        assert json.loads(body)["redis_keys_deleted"] == 1
        status, _, body = a.http("/api/v1/cache/flush", "POST", body="all=1",
                                 headers={"Authorization": "Bearer t0k",
                                          "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
        assert sum(len(k) for k in cl.keys("t:*").values()) == 0
    finally:
        cl.stop()


def test_ask_while_slots_migrate(fault, rrcache):
    """Every slot of one master is marked MIGRATING to another (IMPORTING there): a key not
    yet on the first is answered ASK, and rrcache asks the second after ASKING, once, without
    changing its map; no query fails; once the slots are stable again, sharing goes on."""
    up = fault()
    cl = RedisCluster()
    try:
        ids = cl.masters()
        seeds = list(ids)
        r = rrcache([f"127.0.0.1:{up.port}"], config_extra=cluster_conf(seeds))
        assert wait_for(lambda: metric(r, "rrcache_redis_up") == 1, 15), r.log()
        src, dst = seeds[0], seeds[1]
        mine = [s for s in cl.node(src).cmd("CLUSTER", "SLOTS") if int(s[2][1]) == src]
        slots = [n for s in mine for n in range(int(s[0]), int(s[1]) + 1)]

        def setslot(port, *args):
            c = cl.node(port).client()
            try:
                for n in slots:
                    c.send("CLUSTER", "SETSLOT", n, *args)
                for _ in slots:
                    assert c.reply() == "OK"
            finally:
                c.close()
        setslot(dst, "IMPORTING", ids[src])
        setslot(src, "MIGRATING", ids[dst])
        for i in range(60):
            assert r.query(f"ask{i}.test.").rcode() == dns.rcode.NOERROR
        assert metric(r, "rrcache_redis_cluster_redirects_total", kind="ask") > 0
        assert metric(r, "rrcache_redis_cluster_redirects_total", kind="moved") == 0
        assert metric(r, "rrcache_redis_requests_total", result="skipped") == 0
        for port in (src, dst):
            setslot(port, "STABLE")
        before = metric(r, "rrcache_redis_sets_total")
        for i in range(20):
            assert r.query(f"stable{i}.test.").rcode() == dns.rcode.NOERROR
        assert wait_for(lambda: sum(len(k) for k in cl.keys("t:{*").values()) >= 20)
        assert metric(r, "rrcache_redis_sets_total") - before == 20
    finally:
        cl.stop()

"""The cache saved at a stop and loaded at the next start (cache.save_file): the restarted
instance answers its first queries from cache; a damaged file is refused with a log line and
the start goes on; POST /api/v1/cache/save with the token."""
import json

import dns.rcode


def test_restart_answers_from_the_saved_cache(fault, rrcache, tmp_path):
    up = fault()
    path = tmp_path / "cache.bin"
    conf = f'cache:\n  save_file: "{path}"\n'
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    names = [f"saved{i}.test." for i in range(5)] + ["nxsaved.test."]
    for n in names:
        assert r.query(n).rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    rc, log = r.stop()
    assert rc == 0, log
    assert "entries saved in" in log and path.exists()
    asked = {n: up.count(n) for n in names}
    assert all(v == 1 for v in asked.values())
    r2 = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    assert f"entries loaded from {path}" in r2.log()
    for n in names:
        resp = r2.query(n)
        assert resp.rcode() == (dns.rcode.NXDOMAIN if n.startswith("nx") else dns.rcode.NOERROR)
        assert up.count(n) == 1, n  # answered from the loaded cache
    m = r2.metrics()
    assert m[("rrcache_cache_requests_total", frozenset({("result", "hit")}))] >= len(names)


def test_damaged_file_is_refused(fault, rrcache, tmp_path):
    up = fault()
    path = tmp_path / "cache.bin"
    conf = f'cache:\n  save_file: "{path}"\n'
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    assert r.query("one.test.").rcode() == dns.rcode.NOERROR
    r.stop()
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # truncated
    r2 = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    assert "cache: not loaded:" in r2.log() and "truncated or damaged" in r2.log()
    assert r2.query("one.test.").rcode() == dns.rcode.NOERROR
    assert up.count("one.test.") == 2
    r2.stop()
    path.write_bytes(b"GIF89a not a cache file" * 10)
    r3 = rrcache([f"127.0.0.1:{up.port}"], config_extra=conf)
    assert "not a cache file of rrcache" in r3.log()


def test_save_through_the_api(fault, rrcache, tmp_path):
    up = fault()
    path = tmp_path / "cache.bin"
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=f'cache:\n  save_file: "{path}"\n',
                stats_extra='  token: "t"\n')
    for i in range(3):
        r.query(f"api{i}.test.")
    auth = {"Authorization": "Bearer t"}
    assert r.http("/api/v1/cache/save", "POST")[0] == 401
    status, _, body = r.http("/api/v1/cache/save", "POST", headers=auth)
    assert status == 200 and json.loads(body)["saved"] >= 3
    assert path.exists()
    # Another instance reads what this one saved, while this one runs.
    other = rrcache([f"127.0.0.1:{up.port}"],
                    config_extra=f'cache:\n  save_file: "{path}"\n')
    assert other.query("api1.test.").rcode() == dns.rcode.NOERROR
    assert up.count("api1.test.") == 1
    plain = rrcache([f"127.0.0.1:{up.port}"], stats_extra='  token: "t"\n')
    status, _, body = plain.http("/api/v1/cache/save", "POST", headers=auth)
    assert status == 409 and b"cache.save_file is not set" in body

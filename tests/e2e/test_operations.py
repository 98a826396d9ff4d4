"""Operating rrcache: upstreams by host name, log targets and formats, log rotation, and a
restart without losing queries."""
import os
import shutil
import tempfile
import time

import dns.rcode
import pytest

from helpers import FaultUpstream, Rrcache, default_answer, wait_for



@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare(1) to give rrcache its own /etc/hosts")
def test_upstream_host_name_resolved_at_start_and_reload():
    """An upstream written as a host name (a compose service name) is resolved when the
    configuration is built: at start, and again at each reload, so a service that moved is
    followed by a SIGHUP. rrcache runs in a mount namespace of its own where /etc/hosts is a
    file of the test's."""
    a = FaultUpstream(host="127.0.0.2")
    b = FaultUpstream(host="127.0.0.3", port=a.port)
    tmp = tempfile.mkdtemp(prefix="rrc-hosts-")
    hosts = os.path.join(tmp, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n127.0.0.2 resolver.test\n")
    wrap = ["unshare", "--mount", "sh", "-c",
            f'mount --bind {hosts} /etc/hosts && exec "$0" "$@"']
    r = None
    try:
        r = Rrcache([f'"resolver.test:{a.port}"'], wrap=wrap)
        assert r.query("one.example.").rcode() == dns.rcode.NOERROR
        assert a.seen and not b.seen
        # The service moved: the same name now has another address. Written in place, so
        # the bind mount shows the new text.
        with open(hosts, "r+") as f:
            f.seek(0)
            f.write("127.0.0.1 localhost\n127.0.0.3 resolver.test\n")
            f.truncate()
        n_a = len(a.seen)
        r.hup()
        assert wait_for(lambda: "configuration reloaded" in r.log())
        assert r.query("two.example.").rcode() == dns.rcode.NOERROR
        assert b.seen and len(a.seen) == n_a
        # A name that no longer resolves: the reload is refused, the old address stays.
        with open(hosts, "r+") as f:
            f.seek(0)
            f.write("127.0.0.1 localhost\n")
            f.truncate()
        r.write_config(open(r.conf).read().replace("resolver.test", "gone.invalid"))
        r.hup()
        assert wait_for(lambda: "reload rejected" in r.log())
        assert "cannot resolve 'gone.invalid'" in r.log()
        assert r.query("three.example.").rcode() == dns.rcode.NOERROR
        assert len(b.seen) == 2
    finally:
        if r:
            r.stop()
        a.stop()
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_log_file_json_and_rotation(fault, rrcache, tmp_path):
    """log.target: file with log.format: json writes one JSON object per line; after the file
    is moved away (logrotate), SIGHUP makes rrcache write to a new file under the name, and
    the query log's file moves the same way, each file readable on its own."""
    import json
    from test_dnstap import read_dnstap
    up = fault()
    log, tap = tmp_path / "rrcache.log", tmp_path / "rrcache.dnstap"
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=f'dnstap:\n  file: "{tap}"\n',
                args=["--log-file", str(log), "--log-format", "json"])
    assert r.query("before.test.").rcode() == dns.rcode.NOERROR
    # The query log reaches its file while rrcache runs (flushed at least once a second).
    assert wait_for(lambda: os.path.getsize(tap) > 0 and "before.test" in read_dnstap(str(tap)),
                    deadline=5)
    lines = open(log).read().splitlines()
    objs = [json.loads(line) for line in lines]
    assert any("ready" in o["message"] and o["level"] == "info" and o["group"] == "main"
               for o in objs), lines
    assert all(set(o) == {"time", "level", "group", "message"} for o in objs)
    os.rename(log, str(log) + ".1")
    os.rename(tap, str(tap) + ".1")
    r.hup()
    assert wait_for(lambda: os.path.exists(log) and "configuration reloaded" in open(log).read())
    assert r.query("after.test.").rcode() == dns.rcode.NOERROR
    assert wait_for(lambda: os.path.exists(tap) and "after.test" in read_dnstap(str(tap)),
                    deadline=5)
    rc, _ = r.stop()
    assert rc == 0
    old_tap, new_tap = read_dnstap(str(tap) + ".1"), read_dnstap(str(tap))
    assert "before.test" in old_tap and "after.test" not in old_tap
    assert "after.test" in new_tap and "before.test" not in new_tap
    old_log = open(str(log) + ".1").read()
    new_log = open(log).read()
    assert "configuration reloaded" not in old_log and '"stopped"' in new_log
    for line in new_log.splitlines():
        json.loads(line)


def test_environment_and_secret_files(fault, tmp_path):
    """A container is configured through RRCACHE_* variables (one per flag, lists
    comma-separated) and secrets from files; the command line wins over the environment."""
    import subprocess
    from helpers import RRCACHE, free_port, query, wait_answering
    up = fault()
    port, mport = free_port(), free_port()
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    env = dict(os.environ, RRCACHE_LISTEN=f"127.0.0.1:{port}",
               RRCACHE_UPSTREAM=f"127.0.0.1:{up.port}, 127.0.0.1:{up.port}",
               RRCACHE_CACHE_SIZE="2MiB", RRCACHE_WORKERS="1", RRCACHE_LOG_FORMAT="json",
               RRCACHE_METRICS=f"127.0.0.1:{mport}", RRCACHE_STATS_TOKEN_FILE=str(token),
               RRCACHE_LOG_LEVEL="debug")
    p = subprocess.Popen([RRCACHE, "--log-level", "info"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_answering(port, proc=p)
        assert query("127.0.0.1", port, "env.test.").rcode() == dns.rcode.NOERROR
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{mport}/api/v1/cache/flush",
                                     method="POST", data=b"all=1")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=3)
        assert e.value.code == 401
        req.add_header("Authorization", "Bearer s3cret-token")
        assert urllib.request.urlopen(req, timeout=3).status == 200
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=3).read()
        assert b'rrcache_upstream_up{upstream="127.0.0.1:%d",pool="default"}' % up.port in body
    finally:
        p.terminate()
        err = p.communicate(timeout=10)[1]
    assert p.returncode == 0, err
    import json
    objs = [json.loads(line) for line in err.splitlines()]
    # --log-level info on the command line won over RRCACHE_LOG_LEVEL=debug.
    assert not [o for o in objs if o["level"] == "debug"]
    assert any("2 server(s)" in o["message"] for o in objs)
    # A secret file that cannot be read stops the start, naming the flag.
    bad = subprocess.run([RRCACHE, "--check-config", "--listen", f"127.0.0.1:{port}",
                          "--upstream", f"127.0.0.1:{up.port}",
                          "--redis-key-secret-file", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 1 and "--redis-key-secret-file" in bad.stderr, bad.stderr


ROOT_NS = os.geteuid() == 0 and shutil.which("unshare") is not None


def dgram_socket(path):
    """A unix datagram socket of the test's, bound at path, standing for a log daemon."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def datagram_with(sock, needle, timeout=5.0):
    """The first datagram on sock that contains needle (bytes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sock.recv(65536)
        if needle in m:
            return m
    raise AssertionError(f"no datagram with {needle!r}")


@pytest.mark.skipif(not ROOT_NS, reason="needs root and unshare(1) for a private /run")
def test_journal_target(fault, tmp_path):
    """log.target: journal sends each line as a native journal datagram with PRIORITY,
    SYSLOG_IDENTIFIER and RRCACHE_GROUP; rrcache sees a journal socket of the test's own
    (a private /run in a mount namespace)."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    sock = dgram_socket(jdir / "socket")
    up = fault()
    wrap = ["unshare", "--mount", "sh", "-c",
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && "
            f'mount --bind {jdir} /run/systemd/journal && exec "$0" "$@"']
    r = Rrcache([f"127.0.0.1:{up.port}"], wrap=wrap, args=["--log-target", "journal"])
    try:
        ready = datagram_with(sock, b"ready")
        fields = dict(line.split("=", 1) for line in ready.decode().splitlines())
        assert fields["PRIORITY"] == "6" and fields["SYSLOG_IDENTIFIER"] == "rrcache"
        assert fields["RRCACHE_GROUP"] == "main" and int(fields["SYSLOG_PID"]) == r.proc.pid
        assert "rrcache" in fields["MESSAGE"] and "ready" in fields["MESSAGE"]
        # Nothing went to stderr: the journal took every line.
        assert "ready" not in r.log()
    finally:
        r.stop()
        sock.close()


@pytest.mark.skipif(not ROOT_NS, reason="needs root and unshare(1) for a private /dev")
def test_syslog_target(fault, tmp_path):
    """log.target: syslog goes through syslog(3) to /dev/log with the daemon facility and the
    level's priority; /dev/log is a socket of the test's (a private /dev)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    sock = dgram_socket(tmp_path / "log.sock")
    up = fault()
    nodes = " ".join(n for n in ("null", "zero", "full", "random", "urandom")
                     if os.path.exists(f"/dev/{n}"))
    wrap = ["unshare", "--mount", "sh", "-c",
            f"for n in {nodes}; do touch {dev}/$n && mount --bind /dev/$n {dev}/$n; done && "
            f"ln -s {tmp_path}/log.sock {dev}/log && mount --rbind {dev} /dev && "
            'exec "$0" "$@"']
    r = Rrcache([f"127.0.0.1:{up.port}"], wrap=wrap, args=["--log-target", "syslog"])
    try:
        ready = datagram_with(sock, b"ready").decode()
        # <30> = facility daemon (3) * 8 + info (6); then the time, the tag with the pid.
        assert ready.startswith("<30>"), ready
        assert f"rrcache[{r.proc.pid}]: info [main] rrcache" in ready, ready
    finally:
        r.stop()
        sock.close()


def test_service_manager_notifications(fault, tmp_path):
    """With $NOTIFY_SOCKET (systemd's Type=notify), rrcache says READY=1 once it answers,
    RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a reload, STOPPING=1 at SIGTERM."""
    import signal
    path = str(tmp_path / "notify")
    sock = dgram_socket(path)
    up = fault()
    r = Rrcache([f"127.0.0.1:{up.port}"], wrap=["env", f"NOTIFY_SOCKET={path}"])
    try:
        def state():
            return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
        ready = state()
        assert ready["READY"] == "1" and int(ready["MAINPID"]) == r.proc.pid
        assert "answering on 127.0.0.1:" in ready["STATUS"]
        # It was sent once the port answers: a query right now is answered.
        assert r.query("ready.test.").rcode() == dns.rcode.NOERROR
        r.hup()
        reloading = state()
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        again = state()
        assert again["READY"] == "1" and "reloaded" in again["STATUS"]
        r.proc.send_signal(signal.SIGTERM)
        assert state()["STOPPING"] == "1"
        # (A second SIGTERM now would end it at once; stop() below only collects it.)
        assert r.proc.wait(10) == 0
    finally:
        r.stop()
        sock.close()


def test_restart_without_losing_queries(fault, tmp_path):
    """The upgrade of docs/operations.md: a new rrcache started on the same addresses
    (SO_REUSEPORT), then the old one stopped: a client asking all along loses no query.
    Without the old one leaving the group before it stops reading, the queries the kernel
    had given to its sockets would be lost."""
    import socket
    import threading
    import dns.message
    up = fault()
    old = Rrcache([f"127.0.0.1:{up.port}"], workers=2)
    port = old.port
    new = None
    lost, answered = [], [0]
    stop = threading.Event()

    def client(k):
        # Its own socket, and a new source port every 50 queries, so that queries spread
        # over every socket of both groups.
        n = 0
        s = None
        while not stop.is_set():
            if n % 50 == 0:
                if s:
                    s.close()
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(1.0)
            q = dns.message.make_query(f"u{k}-{n % 200}.test.", "A")
            s.sendto(q.to_wire(), ("127.0.0.1", port))
            try:
                while True:
                    r = dns.message.from_wire(s.recv(4096))
                    if r.id == q.id:
                        break
                answered[0] += 1
            except (socket.timeout, dns.exception.DNSException):
                lost.append(q.question[0].name.to_text())
            n += 1
        s.close()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        new = Rrcache([f"127.0.0.1:{up.port}"], workers=2, listen=[f"127.0.0.1:{port}"])
        time.sleep(0.5)
        before = answered[0]
        rc, log = old.stop()
        assert rc == 0, log
        time.sleep(1.0)
        assert answered[0] > before  # the new one answers alone now
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        if new:
            new.stop()
        old.stop(check=False)
    assert answered[0] > 500
    assert not lost, f"{len(lost)} of {answered[0] + len(lost)} queries lost: {lost[:5]}"

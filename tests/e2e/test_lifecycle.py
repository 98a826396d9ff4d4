"""Command line, reload, shutdown and client ACL."""
import os
import signal
import subprocess
import tempfile
import threading
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from helpers import RRCACHE, default_answer, free_port, query, raw_udp, wait_answering


def run(*args, timeout=10):
    return subprocess.run([RRCACHE, *args], capture_output=True, text=True, timeout=timeout)


def test_version_and_help():
    v = run("--version")
    assert v.returncode == 0 and v.stdout.startswith("rrcache ")
    # The commit of the tree it was built from, what is compiled in, and the libraries.
    import re
    first, features, libs = v.stdout.splitlines()[:3]
    m = re.match(r"rrcache \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}\+?|unknown)\)$", first)
    assert m, first
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if m.group(1) != "unknown" and os.path.isdir(os.path.join(root, "..", ".git")):
        # A commit of this repository (the one the binary was built on).
        known = subprocess.run(["git", "-C", root, "cat-file", "-e",
                                m.group(1).rstrip("+") + "^{commit}"], capture_output=True)
        assert known.returncode == 0, first
    assert features.startswith("features:") and "Redis tier" in features
    for lib in ("libuv", "ldns", "hiredis", "libmicrohttpd", "OpenSSL", "libyaml"):
        assert lib in libs, libs
    h = run("--help")
    assert h.returncode == 0 and "--upstream" in h.stdout and "--check-config" in h.stdout
    bad = run("--no-such-flag")
    assert bad.returncode == 1


def test_check_config():
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("listen: ['127.0.0.1:5300']\nupstream:\n  servers: [192.0.2.1]\n")
        good = f.name
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("listen: ['127.0.0.1:5300']\nupstream:\n  servers: [192.0.2.1]\n"
                "cache:\n  size: 12 parsecs\n")
        bad = f.name
    try:
        ok = run("-c", good, "--check-config")
        assert ok.returncode == 0, ok.stderr
        ko = run("-c", bad, "--check-config")
        assert ko.returncode == 1
        assert f"{bad}:5:9: cache.size: bad size '12 parsecs'" in ko.stderr
        shipped = run("-c", os.path.join(os.path.dirname(RRCACHE), "..", "..", "config",
                                         "rrcache.yaml"),
                      "--upstream", "192.0.2.53", "--check-config")
        assert shipped.returncode == 0, shipped.stderr
        badflag = run("-c", good, "--listen", "[::1", "--check-config")
        assert badflag.returncode == 1 and "--listen" in badflag.stderr
    finally:
        os.unlink(good)
        os.unlink(bad)


@pytest.mark.parametrize("example", sorted(os.listdir(os.path.join(
    os.path.dirname(__file__), "..", "..", "config", "examples"))))
def test_example_configs_are_valid(example, tmp_path):
    import re
    path = os.path.join(os.path.dirname(__file__), "..", "..", "config", "examples", example)
    text = open(path).read()
    # Secrets the example reads from /etc/rrcache/ are stood in for by files of the test's.
    for secret in set(re.findall(r"/etc/rrcache/[\w.-]+", text)):
        stand_in = tmp_path / os.path.basename(secret)
        stand_in.write_text("example-secret\n")
        text = text.replace(secret, str(stand_in))
    conf = tmp_path / example
    conf.write_text(text)
    p = run("-c", str(conf), "--check-config")
    assert p.returncode == 0, p.stderr


def test_sighup_reload_keeps_cache_and_switches_upstream(fault, rrcache):
    a, b = fault(), fault()
    r = rrcache([f"127.0.0.1:{a.port}"])
    r.query("kept.test.")
    assert a.count("kept.test.") == 1
    text = open(r.conf).read().replace(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}")
    r.write_config(text)
    r.hup()
    deadline = time.time() + 5
    while "configuration reloaded" not in r.log() and time.time() < deadline:
        time.sleep(0.05)
    assert "configuration reloaded" in r.log()
    # The cache survived: no upstream asked.
    assert r.query("kept.test.").answer
    assert a.count() == 1 and b.count() == 0
    # New names go to the new upstream.
    r.query("new.test.")
    assert b.count("new.test.") == 1 and a.count("new.test.") == 0
    # The ACL changes too.
    pkt = dns.message.make_query("kept.test.", "A").to_wire()
    assert raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.2") is not None
    r.write_config(text + ACL_DENY_2)
    r.hup()
    deadline = time.time() + 5
    while r.log().count("configuration reloaded") < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.2", timeout=0.5) is None
    assert raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.3") is not None


def test_sigterm_with_idle_tcp_connection_is_prompt(fault, rrcache):
    import socket
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    s = socket.create_connection(("127.0.0.1", r.port))
    time.sleep(0.1)
    t0 = time.monotonic()
    r.proc.send_signal(signal.SIGTERM)
    assert r.proc.wait(5) == 0
    assert time.monotonic() - t0 < 1.0
    s.close()


def test_sighup_bad_file_rejected(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    good = open(r.conf).read()
    r.write_config(good + "cache:\n  size: plenty\n")
    r.hup()
    deadline = time.time() + 5
    while "reload rejected" not in r.log() and time.time() < deadline:
        time.sleep(0.05)
    assert "reload rejected" in r.log()
    assert "cache.size: bad size 'plenty'" in r.log()
    assert r.query("still.test.").answer  # the old configuration keeps running
    r.write_config(good)


def test_sigterm_finishes_inflight_and_exits_0(fault, rrcache):
    up = fault(lambda q, t: [("sleep", 0.5), default_answer(q)])
    r = rrcache([f"127.0.0.1:{up.port}"])
    result = {}

    def ask():
        try:
            result["resp"] = query("127.0.0.1", r.port, "inflight.test.", timeout=3)
        except Exception as e:  # noqa
            result["err"] = e
    t = threading.Thread(target=ask)
    t.start()
    time.sleep(0.15)
    r.proc.send_signal(signal.SIGTERM)
    t.join(5)
    assert result.get("resp") is not None, result
    assert result["resp"].answer
    assert r.proc.wait(5) == 0


def test_sigint_exits_0(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"])
    r.proc.send_signal(signal.SIGINT)
    assert r.proc.wait(5) == 0


def test_sigterm_with_silent_upstream_is_bounded(fault, rrcache):
    up = fault(lambda q, t: None)
    r = rrcache([f"127.0.0.1:{up.port}"],
                upstream_extra="  timeout: 5s\n  client_timeout: 10s")
    s = __import__("socket").socket(__import__("socket").AF_INET,
                                    __import__("socket").SOCK_DGRAM)
    s.sendto(dns.message.make_query("hang.test.", "A").to_wire(), ("127.0.0.1", r.port))
    time.sleep(0.1)
    t0 = time.monotonic()
    r.proc.send_signal(signal.SIGTERM)
    assert r.proc.wait(6) == 0
    assert time.monotonic() - t0 < 3.0  # 2 s grace, then SERVFAIL and exit
    s.settimeout(1)
    m = dns.message.from_wire(s.recv(4096))
    assert m.rcode() == dns.rcode.SERVFAIL
    s.close()


def test_bind_failure_is_reported(fault):
    up = fault()
    port = free_port()
    import socket
    hog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hog.bind(("127.0.0.1", port))
    try:
        p = run("--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{up.port}",
                "--metrics", "off")
        assert p.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}/udp" in p.stderr
        # The usual holders of a DNS port are named, and how to find the one.
        assert "another server holds it" in p.stderr and "ss -lunp" in p.stderr
    finally:
        hog.close()


def test_privileged_port_refusal_says_what_to_do(fault):
    """Started as an unprivileged user on port 53, rrcache says how to get the port (the
    capability, the systemd unit, or another port) instead of only "Permission denied"."""
    import shutil
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        if int(f.read()) <= 53:
            pytest.skip("this kernel lets any user bind port 53")
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv (util-linux) to start rrcache as nobody")
    if subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                       "test", "-x", RRCACHE]).returncode != 0:
        pytest.skip(f"nobody cannot run {RRCACHE} from here")
    up = fault()
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", RRCACHE,
                        "--listen", "127.0.0.1:53", "--upstream", f"127.0.0.1:{up.port}",
                        "--metrics", "off"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "cannot listen on 127.0.0.1:53/udp: Permission denied" in p.stderr
    assert "CAP_NET_BIND_SERVICE" in p.stderr and "above 1023" in p.stderr


ACL_DENY_2 = "acl:\n  allow: [127.0.0.0/8]\n  deny: [127.0.0.2/32]\n"


def test_acl_drop(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=ACL_DENY_2)
    pkt = dns.message.make_query("acl.test.", "A").to_wire()
    assert raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.2", timeout=0.5) is None
    assert raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.3") is not None
    assert up.count("acl.test.") == 1
    # TCP from a denied client gets nothing either.
    import socket
    import struct
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", r.port))
    s.settimeout(1)
    try:
        s.sendall(struct.pack("!H", len(pkt)) + pkt)
        got = s.recv(100)
    except socket.timeout:
        got = b"(timeout)"
    except (ConnectionResetError, BrokenPipeError):
        got = b""  # closed at accept (the ACL is checked there)
    s.close()
    assert got in (b"", b"(timeout)")


def test_acl_refuse(fault, rrcache):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra=ACL_DENY_2 + "  action: refuse\n")
    pkt = dns.message.make_query("acl.test.", "A").to_wire()
    m = dns.message.from_wire(raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.2"))
    assert m.rcode() == dns.rcode.REFUSED
    assert m.question[0].name.to_text() == "acl.test."
    assert not m.answer
    assert up.count() == 0


@pytest.mark.parametrize("first", ["allow", "deny"])
def test_acl_tie_is_denied_whatever_the_key_order(fault, rrcache, first):
    """allow and deny of the same prefix: deny wins (it used to depend on which YAML key came
    first)."""
    up = fault()
    rules = {"allow": "  allow: [127.0.0.0/8, 127.0.0.5/32]\n",
             "deny": "  deny: [127.0.0.5/32]\n"}
    second = "deny" if first == "allow" else "allow"
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra="acl:\n" + rules[first] + rules[second])
    pkt = dns.message.make_query("tie.test.", "A").to_wire()
    assert raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.5", timeout=0.5) is None
    assert raw_udp("127.0.0.1", r.port, pkt, source="127.0.0.6") is not None


def test_privileges_dropped_after_binding(fault, rrcache):
    """Started as root with user: nobody, every thread runs as nobody (real, effective, saved
    and filesystem IDs) once the sockets are bound, and misses still open upstream sockets."""
    import pwd
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    nobody = pwd.getpwnam("nobody")
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], config_extra='user: "nobody"\n')
    assert "running as user nobody" in r.log()
    tasks = os.listdir(f"/proc/{r.proc.pid}/task")
    assert len(tasks) >= 2
    for tid in tasks:
        with open(f"/proc/{r.proc.pid}/task/{tid}/status") as f:
            ids = {line.split(":")[0]: line.split()[1:] for line in f if line[:4] in ("Uid:", "Gid:")}
        assert ids["Uid"] == [str(nobody.pw_uid)] * 4, (tid, ids)
        assert ids["Gid"] == [str(nobody.pw_gid)] * 4, (tid, ids)
    for i in range(5):
        assert r.query(f"after-drop{i}.test.").answer[0][0].address == "192.0.2.7"


def test_unknown_user_stops_the_start(fault):
    up = fault()
    import tempfile as tf
    d = tf.mkdtemp()
    conf = os.path.join(d, "c.yaml")
    with open(conf, "w") as f:
        f.write('user: "no-such-user-here"\n')
    p = run("-c", conf, "--listen", f"127.0.0.1:{free_port()}", "--upstream",
            f"127.0.0.1:{up.port}", "--metrics", "off")
    assert p.returncode == 1
    assert "no user 'no-such-user-here'" in p.stderr

"""Test helpers for rrcache end-to-end tests: free ports, a Knot authoritative server with a
generated zone, a scriptable dnspython upstream for faults, and a runner for the rrcache binary.

Everything listens on loopback only, on ports picked at random, and every process started here
is stopped by the fixture that started it, also when the test fails.
"""
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RRCACHE = os.environ.get("RRCACHE_BIN", os.path.join(ROOT, "build", "src", "rrcache"))


def need(tool, package):
    path = shutil.which(tool) or (os.path.exists(tool) and tool)
    if not path:
        raise RuntimeError(f"{tool} is missing: apt-get install {package}")
    return path


def free_port(host="127.0.0.1"):
    """A port free for both UDP and TCP on host."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        port = random.randint(20000, 60000)
        u = socket.socket(fam, socket.SOCK_DGRAM)
        t = socket.socket(fam, socket.SOCK_STREAM)
        try:
            u.bind((host, port))
            t.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


def end_process(proc):
    """SIGTERM, then SIGKILL if proc has not exited within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric(r, name, **labels):
    """The value of one series of r's /metrics (0 when absent)."""
    return r.metrics().get((name, frozenset(labels.items())), 0)


def wait_for(pred, deadline=5.0):
    """Polls pred every 50 ms until it is true (True) or the deadline passes (False)."""
    end = time.time() + deadline
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def query(server, port, name, rdtype="A", tcp=False, timeout=3.0, **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    if tcp:
        return dns.query.tcp(q, server, port=port, timeout=timeout)
    return dns.query.udp(q, server, port=port, timeout=timeout)


def raw_udp(server, port, payload, timeout=1.0, source="127.0.0.1"):
    """Sends raw bytes; returns the raw reply or None on timeout."""
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        if fam == socket.AF_INET:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(payload, (server, port))
        try:
            data, _ = s.recvfrom(65535)
            return data
        except socket.timeout:
            return None
    finally:
        s.close()


STARTUP_PROBE = dns.name.from_text("rrcache-startup-probe.invalid.")


def wait_answering(port, host="127.0.0.1", deadline=10.0, proc=None, probe=None):
    """Waits until a server answers probe on host:port. The default probe is a query with
    QDCOUNT=0, which rrcache answers itself (FORMERR) without asking any upstream."""
    end = time.time() + deadline
    probe = probe or struct.pack("!HHHHHH", 0x5254, 0x0100, 0, 0, 0, 0)
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        if raw_udp(host, port, probe, timeout=0.2) is not None:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on {host}:{port}")


# ---------------------------------------------------------------- Knot

ZONE = "example.test."


def zone_text(extra=""):
    lines = [
        "$ORIGIN example.test.",
        "$TTL 3600",
        "@ 3600 IN SOA ns1 hostmaster 1 3600 900 604800 300",
        "@ 3600 IN NS ns1",
        "ns1 3600 IN A 127.0.0.1",
        "www 3600 IN A 192.0.2.1",
        "www 3600 IN AAAA 2001:db8::1",
        "@ 3600 IN MX 10 mail",
        "mail 3600 IN A 192.0.2.25",
        'txt 3600 IN TXT "hello rrcache"',
        "alias 3600 IN CNAME www",
        "short 2 IN A 192.0.2.2",
        "zero 0 IN A 192.0.2.3",
        "signed 3600 IN A 192.0.2.4",
        "*.wild 3600 IN A 192.0.2.99",
    ]
    # A name whose answer is far larger than 512 and 1232 bytes (R14, TC paths).
    for i in range(40):
        lines.append(f'big 3600 IN TXT "{i:02d}-' + "x" * 60 + '"')
    for i in range(1000):
        lines.append(f"n{i} 3600 IN A 198.51.100.{i % 250 + 1}")
    return "\n".join(lines) + "\n" + extra


def sign_zone(directory, origin, records, nsec3=False, expired=False):
    """Writes ORIGIN's zone (an SOA, an NS and the given record lines, relative names allowed)
    into directory and signs it with ldns-signzone under one ECDSA P-256 key with the SEP flag
    (NSEC, or NSEC3 without opt-out; signatures that expired in 2020 when expired). Returns the
    signed file's path and the key's DS record, for a trust anchor."""
    need("ldns-keygen", "ldnsutils")
    need("ldns-signzone", "ldnsutils")
    origin = origin.rstrip(".") + "."
    lines = [f"$ORIGIN {origin}", "$TTL 3600",
             "@ 3600 IN SOA ns1 hostmaster 1 3600 900 604800 300",
             "@ 3600 IN NS ns1", "ns1 3600 IN A 127.0.0.1"] + list(records)
    zone = os.path.join(directory, origin + "zone")
    with open(zone, "w") as f:
        f.write("\n".join(lines) + "\n")
    base = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin],
                          cwd=directory, check=True, capture_output=True,
                          text=True).stdout.strip()
    args = ["ldns-signzone", "-f", zone + ".signed"]
    if nsec3:
        args += ["-n", "-t", "0"]
    if expired:
        args += ["-i", "20190101000000", "-e", "20200101000000"]
    subprocess.run(args + [zone, base], cwd=directory, check=True, capture_output=True)
    with open(os.path.join(directory, base + ".ds")) as f:
        ds = " ".join(f.read().split())
    return zone + ".signed", ds


class Knot:
    """knotd serving example.test. on 127.0.0.1:<port>, and the zones of extra_zones
    ((origin, file) pairs, served as they are: a signed file keeps its signatures)."""

    def __init__(self, extra_zone="", extra_zones=()):
        need("knotd", "knot")
        self.dir = tempfile.mkdtemp(prefix="rrc-knot-")
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        with open(os.path.join(self.dir, "example.test.zone"), "w") as f:
            f.write(zone_text(extra_zone))
        more = "".join(f"""  - domain: {origin}
    file: "{path}"
""" for origin, path in extra_zones)
        conf = f"""server:
    rundir: "{self.dir}"
    listen: 127.0.0.1@{self.port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{self.dir}"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{self.dir}"
    semantic-checks: off
zone:
  - domain: example.test.
    file: "{self.dir}/example.test.zone"
""" + more
        self.conf = os.path.join(self.dir, "knot.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(self.dir, "knotd.log"), "w")
        self.restart()

    def kill(self):
        """Stops knotd (the zone files stay, for restart())."""
        end_process(self.proc)

    def restart(self):
        """Starts knotd (again, on the same port, once it has been killed); returns once it
        answers."""
        self.proc = subprocess.Popen(["knotd", "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        end = time.time() + 15
        while True:
            try:
                r = query("127.0.0.1", self.port, "www.example.test.", timeout=0.3)
                if r.answer:
                    break
            except Exception:
                pass
            if self.proc.poll() is not None or time.time() > end:
                self.stop()
                raise RuntimeError("knotd did not start: " +
                                   open(os.path.join(self.dir, "knotd.log")).read())
            time.sleep(0.1)

    def stop(self):
        self.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Unbound:
    """unbound as a validating resolver on 127.0.0.1:<port>: the zones of stubs (origin ->
    port of an authoritative server on 127.0.0.1) asked directly, each validated from the
    trust anchors given (DS records); nothing else configured, no root anchor."""

    def __init__(self, stubs, anchors):
        binary = need("unbound", "unbound")
        self.dir = tempfile.mkdtemp(prefix="rrc-unbound-")
        self.port = free_port()
        conf = f"""server:
    interface: 127.0.0.1@{self.port}
    port: {self.port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{self.dir}"
    pidfile: "{self.dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    do-ip6: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "validator iterator"
    local-zone: "test." nodefault
"""
        conf += "".join(f'    trust-anchor: "{a}"\n' for a in anchors)
        conf += "remote-control:\n    control-enable: no\n"
        for origin, port in stubs.items():
            conf += f"stub-zone:\n    name: \"{origin}\"\n    stub-addr: 127.0.0.1@{port}\n"
        self.conf = os.path.join(self.dir, "unbound.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(self.dir, "unbound.log"), "w")
        self.proc = subprocess.Popen([binary, "-d", "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        end = time.time() + 15
        probe = next(iter(stubs))
        while True:
            try:
                if query("127.0.0.1", self.port, probe, "SOA", timeout=0.3).answer:
                    break
            except Exception:
                pass
            if self.proc.poll() is not None or time.time() > end:
                self.stop()
                raise RuntimeError("unbound did not start: " + self.log_text())
            time.sleep(0.1)

    def log_text(self):
        with open(os.path.join(self.dir, "unbound.log")) as f:
            return f.read()

    def stop(self):
        end_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- fault upstream

class Seen:
    def __init__(self, transport, src, msg_id, qname, qtype, wire):
        self.transport = transport
        self.src = src
        self.id = msg_id
        self.qname = qname
        self.qtype = qtype
        self.wire = wire


def default_answer(q):
    """A for any name (192.0.2.x, TTL 300), NXDOMAIN with SOA for names starting 'nx'."""
    r = dns.message.make_response(q)
    qn = q.question[0].name
    rt = q.question[0].rdtype
    if qn.labels[0].startswith(b"nx"):
        r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(dns.rrset.from_text(
            "fault.test.", 600, "IN", "SOA", "ns.fault.test. h.fault.test. 1 60 60 60 120"))
    elif rt == dns.rdatatype.A:
        r.answer.append(dns.rrset.from_text(qn, 300, "IN", "A", "192.0.2.7"))
    return r


class FaultUpstream:
    """A scriptable upstream on 127.0.0.1:<port>, UDP and TCP.

    handler(query_message, transport) returns one of:
      None                         -> stay silent
      dns.message.Message          -> send it
      bytes                        -> send these raw bytes
      list of the above / ("sleep", s) tuples -> act in order
    Every query received is recorded in .seen.
    """

    def __init__(self, handler=None, host="127.0.0.1", port=None):
        self.handler = handler or (lambda q, t: default_answer(q))
        self.host = host
        self.port = port or free_port(host)
        self.seen = []
        self.lock = threading.Lock()
        self.stopping = False
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, self.port))
        self.udp.settimeout(0.1)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, self.port))
        self.tcp.listen(64)
        self.tcp.settimeout(0.1)
        self.threads = [threading.Thread(target=self._udp_loop, daemon=True),
                        threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def count(self, name=None):
        with self.lock:
            if name is None:
                return len(self.seen)
            n = dns.name.from_text(name)
            return sum(1 for s in self.seen if s.qname == n)

    def _record(self, transport, src, wire):
        try:
            q = dns.message.from_wire(wire)
        except Exception:
            return None
        if q.question and q.question[0].name == STARTUP_PROBE:
            return q  # the harness's own readiness probe is not part of any test
        with self.lock:
            self.seen.append(Seen(transport, src, q.id, q.question[0].name,
                                  q.question[0].rdtype, wire))
        return q

    def _act(self, q, transport, send):
        out = self.handler(q, transport)
        if out is None:
            return
        if not isinstance(out, list):
            out = [out]
        for item in out:
            if item is None:
                continue
            if isinstance(item, tuple) and item[0] == "sleep":
                time.sleep(item[1])
                continue
            wire = item if isinstance(item, (bytes, bytearray)) else item.to_wire()
            send(bytes(wire))

    def _udp_loop(self):
        while not self.stopping:
            try:
                wire, src = self.udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            q = self._record("udp", src, wire)
            if q is None:
                continue

            def send(b, src=src):
                try:
                    self.udp.sendto(b, src)
                except OSError:
                    pass
            threading.Thread(target=self._act, args=(q, "udp", send), daemon=True).start()

    def _tcp_conn(self, conn, src):
        conn.settimeout(5)
        lock = threading.Lock()

        def send(b):
            with lock:
                try:
                    conn.sendall(struct.pack("!H", len(b)) + b)
                except OSError:
                    pass
        try:
            while not self.stopping:
                hdr = conn.recv(2)
                if len(hdr) < 2:
                    return
                n = struct.unpack("!H", hdr)[0]
                wire = b""
                while len(wire) < n:
                    chunk = conn.recv(n - len(wire))
                    if not chunk:
                        return
                    wire += chunk
                q = self._record("tcp", src, wire)
                if q is not None:
                    self._act(q, "tcp", send)
        except OSError:
            pass
        finally:
            conn.close()

    def _tcp_loop(self):
        while not self.stopping:
            try:
                conn, src = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn, src), daemon=True).start()

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()


class PacedUpstream:
    """A fast upstream on 127.0.0.1:<port> (UDP only, one thread) that answers every query
    (default_answer) after delay seconds plus up to jitter more, and records for each query
    .log entries (received, answered, source port, ID, name). .spoof(fn) installs a hook
    called with (query, source) on receipt, from the serving thread, to send lies before the
    real answer."""

    def __init__(self, delay=0.02, jitter=0.0):
        import heapq
        self.delay, self.jitter = delay, jitter
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.setblocking(False)
        self.lock = threading.Lock()
        self.log = []
        self.hook = None
        self.stopping = False
        self._due = []
        self._heapq = heapq
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def spoof(self, fn):
        self.hook = fn

    def _loop(self):
        import select
        rnd = random.Random(7)
        seq = 0
        while not self.stopping:
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, wire, src, entry = self._heapq.heappop(self._due)
                try:
                    self.sock.sendto(wire, src)
                except OSError:
                    pass
                entry[1] = time.monotonic()
            wait = min(0.05, max(0.0, self._due[0][0] - now)) if self._due else 0.05
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                continue
            for _ in range(256):
                try:
                    wire, src = self.sock.recvfrom(65535)
                except (BlockingIOError, OSError):
                    break
                try:
                    q = dns.message.from_wire(wire)
                except Exception:
                    continue
                if q.question and q.question[0].name == STARTUP_PROBE:
                    self.sock.sendto(default_answer(q).to_wire(), src)
                    continue
                entry = [time.monotonic(), None, src[1], q.id, q.question[0].name]
                with self.lock:
                    self.log.append(entry)
                if self.hook:
                    self.hook(q, src)
                seq += 1
                at = entry[0] + self.delay + rnd.random() * self.jitter
                self._heapq.heappush(self._due, (at, seq, default_answer(q).to_wire(), src,
                                                 entry))

    def entries(self):
        with self.lock:
            return [tuple(e) for e in self.log]

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


def blast(port, names, window=100, deadline=30.0):
    """Sends A queries for names to 127.0.0.1:port over a few client sockets, at most window
    unanswered at once, and returns {name: response} for those answered before deadline."""
    import select
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for s in socks:
        s.setblocking(False)
    out, waiting = {}, {}
    todo = list(names)
    end = time.monotonic() + deadline
    try:
        while (todo or waiting) and time.monotonic() < end:
            while todo and len(waiting) < window:
                name = todo.pop()
                q = dns.message.make_query(name, "A")
                socks[len(todo) % len(socks)].sendto(q.to_wire(), ("127.0.0.1", port))
                waiting[q.id, dns.name.from_text(name)] = name
            ready, _, _ = select.select(socks, [], [], 0.2)
            for s in ready:
                while True:
                    try:
                        wire = s.recv(65535)
                    except BlockingIOError:
                        break
                    r = dns.message.from_wire(wire)
                    name = waiting.pop((r.id, r.question[0].name), None)
                    if name is not None:
                        out[name] = r
    finally:
        for s in socks:
            s.close()
    return out


# ---------------------------------------------------------------- rrcache

class Rrcache:
    """The real rrcache binary with a generated YAML file."""

    def __init__(self, upstreams, config_extra="", workers=1, listen=None, args=None,
                 upstream_extra="", stats_extra="", nofile=None, wrap=None):
        if not os.path.exists(RRCACHE):
            raise RuntimeError(f"{RRCACHE} is missing: build first (cmake --build build)")
        self.dir = tempfile.mkdtemp(prefix="rrc-")
        if listen:
            host, port = listen[0].rsplit(":", 1)
            host = host.strip("[]")
            self.host = "127.0.0.1" if host == "0.0.0.0" else host
            self.port = int(port)
        else:
            self.host = "127.0.0.1"
            self.port = free_port()
            listen = [f"127.0.0.1:{self.port}"]
        self.listen = listen
        self.stats_port = free_port()
        ups = "\n".join(f"    - {u}" for u in upstreams)
        self.conf = os.path.join(self.dir, "rrcache.yaml")
        self.write_config(f"""workers: {workers}
listen:
""" + "\n".join(f'  - "{a}"' for a in listen) + f"""
upstream:
  servers:
{ups}
{upstream_extra}
log:
  level: info
stats:
  listen: "127.0.0.1:{self.stats_port}"
{stats_extra}
""" + config_extra)
        self.logpath = os.path.join(self.dir, "rrcache.log")
        self.logf = open(self.logpath, "w")
        def limit_files():
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        # wrap: a command that runs rrcache as its last arguments and execs it (so that the
        # process is rrcache's own), e.g. one that enters a namespace first.
        self.proc = subprocess.Popen((wrap or []) + [RRCACHE, "-c", self.conf] + (args or []),
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=limit_files if nofile else None)
        try:
            wait_answering(self.port, host=self.host, proc=self.proc)
        except Exception:
            self.stop(check=False)
            raise

    def write_config(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def query(self, name, rdtype="A", **kw):
        return query(self.host, self.port, name, rdtype, **kw)

    def log(self):
        with open(self.logpath) as f:
            return f.read()

    def http(self, path, method="GET", body=None, headers=None, timeout=5):
        """A request to the statistics endpoint: (status, headers, body bytes)."""
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.stats_port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def metrics(self):
        """/metrics as {(name, frozenset of label items): value}."""
        import re
        status, _, body = self.http("/metrics")
        assert status == 200
        out = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
            assert m, line
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, check=True):
        if getattr(self, "_stopped", None) is not None:
            return self._stopped
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = "killed"
        else:
            rc = self.proc.returncode
        self.logf.close()
        log = open(self.logpath).read()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._stopped = (rc, log)
        if check:
            assert rc == 0, f"rrcache exited with {rc}\n{log}"
            assert "runtime error" not in log and "AddressSanitizer" not in log, log
        return rc, log


# ---------------------------------------------------------------- Redis

class RespError(Exception):
    pass


class RedisClient:
    """A minimal RESP client for the tests (binary-safe arguments, blocking)."""

    def __init__(self, port=None, path=None, timeout=5.0):
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RespError(f"unexpected reply {line!r}")

    def cmd(self, *args):
        self.send(*args)
        return self.reply()


class Redis:
    """A redis-server of the test's own on a random loopback port and a unix socket."""

    def __init__(self, port=None, password=None, extra=()):
        self.exe = need("redis-server", "redis-server")
        self.dir = tempfile.mkdtemp(prefix="rrc-redis-")
        self.port = port or free_port()
        self.sock = os.path.join(self.dir, "redis.sock")
        self.password = password
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--enable-debug-command", "yes", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log")] + self.extra
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        end = time.time() + 10
        while time.time() < end:
            try:
                c = self.client()
                c.cmd("PING")
                c.close()
                return
            except (OSError, RespError):
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start")
                time.sleep(0.05)
        raise RuntimeError("redis-server does not answer")

    def client(self):
        c = RedisClient(port=self.port)
        if self.password:
            c.cmd("AUTH", self.password)
        return c

    def cmd(self, *args):
        c = self.client()
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def keys(self, pattern="*"):
        return sorted(self.cmd("KEYS", pattern))

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def fleet_redis_conf(where, extra=""):
    """A redis: section for the tests of a fleet: where (the lines that say which Redis),
    the fleet's keys, and deadlines far above loopback round trips with short backoffs."""
    return f"""redis:
{where}  key_prefix: "t:"
  key_secret: "fleet secret"
  timeout: 500ms
  connect_timeout: 500ms
  backoff_min: 100ms
  backoff_max: 1s
{extra}"""


class SentinelSet:
    """A Redis master, one replica of it and three redis-sentinel processes watching them as
    master `name` (quorum 2, down after down_ms), each on a random loopback port. Returns once
    the replica is in sync and every sentinel knows the replica and the other sentinels."""

    def __init__(self, name="rrc", down_ms=1000):
        exe = need("redis-sentinel", "redis-sentinel")
        self.name = name
        self.master = Redis()
        self.replica = Redis(extra=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.dir = tempfile.mkdtemp(prefix="rrc-sentinel-")
        self.ports, self.procs = [], []
        try:
            wait_until(lambda: b"master_link_status:up" in
                       self.replica.cmd("INFO", "replication"), 20, "the replica to sync")
            for i in range(3):
                port = free_port()
                conf = os.path.join(self.dir, f"s{i}.conf")
                with open(conf, "w") as f:
                    f.write(f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                            f"dir {self.dir}\nlogfile {self.dir}/s{i}.log\n"
                            f"sentinel monitor {name} 127.0.0.1 {self.master.port} 2\n"
                            f"sentinel down-after-milliseconds {name} {down_ms}\n"
                            f"sentinel failover-timeout {name} 10000\n")
                self.ports.append(port)
                self.procs.append(subprocess.Popen([exe, conf], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.STDOUT))
            for port in self.ports:
                wait_until(lambda: self.ask(port, "SENTINEL", "replicas", name) and
                           len(self.ask(port, "SENTINEL", "sentinels", name)) == 2, 30,
                           "the sentinels to know the replica and each other")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def ask(port, *args):
        try:
            c = RedisClient(port=port, timeout=2)
        except OSError:
            return None
        try:
            return c.cmd(*args)
        except (OSError, RespError):
            return None
        finally:
            c.close()

    def master_port(self):
        """The master's port as the first sentinel that answers says."""
        for port in self.ports:
            r = self.ask(port, "SENTINEL", "get-master-addr-by-name", self.name)
            if r:
                return int(r[1])
        return None

    def log(self):
        return "".join(open(os.path.join(self.dir, f"s{i}.log")).read()
                       for i in range(len(self.ports))
                       if os.path.exists(os.path.join(self.dir, f"s{i}.log")))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.master.stop()
        self.replica.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A Redis Cluster of `masters` masters with one replica each (redis-cli --cluster create),
    on random loopback ports whose bus ports (+10000) are free too; node timeout node_ms."""

    def __init__(self, masters=3, node_ms=2000):
        cli = need("redis-cli", "redis-tools")
        self.nodes = []
        try:
            for _ in range(masters * 2):
                port = free_cluster_port()
                self.nodes.append(Redis(port=port, extra=[
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_ms)]))
            out = subprocess.run([cli, "--cluster", "create"] +
                                 [f"127.0.0.1:{n.port}" for n in self.nodes] +
                                 ["--cluster-replicas", "1", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError("redis-cli --cluster create: " + out.stdout + out.stderr)
            wait_until(self.healthy, 30, "the cluster to be ok on every node")
        except BaseException:
            self.stop()
            raise

    def healthy(self):
        for n in self.nodes:
            if n.proc.poll() is not None:
                continue
            try:
                if b"cluster_state:ok" not in n.cmd("CLUSTER", "INFO"):
                    return False
            except (OSError, RespError):
                return False
        return True

    def masters(self):
        """The live masters as {port: node id}."""
        out = {}
        for n in self.nodes:
            if n.proc.poll() is not None:
                continue
            try:
                role = n.cmd("ROLE")
                if role[0] == b"master":
                    out[n.port] = n.cmd("CLUSTER", "MYID").decode()
            except (OSError, RespError):
                pass
        return out

    def keys(self, pattern="*"):
        """{port: keys} of the live masters."""
        return {p: [k for k in self.node(p).cmd("KEYS", pattern)] for p in self.masters()}

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def log(self):
        """The last lines of every node's log."""
        out = []
        for n in self.nodes:
            path = os.path.join(n.dir, "redis.log")
            if os.path.exists(path):
                out.append(f"--- {n.port}\n" + "".join(open(path).readlines()[-15:]))
        return "\n".join(out)

    def stop(self):
        for n in self.nodes:
            n.stop()


def free_cluster_port():
    """A free loopback port whose cluster bus port (+10000) is free as well."""
    for _ in range(200):
        p = free_port()
        if p + 10000 >= 65536:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair for a cluster node")


def wait_until(cond, seconds, what):
    """wait_for, raising when the deadline passes."""
    if not wait_for(cond, seconds):
        raise RuntimeError(f"timed out waiting for {what}")


class FakeRedis:
    """A hostile stand-in for Redis on a random loopback port: it sends `greeting` on every new
    connection, then answers each command (a list of bytes arguments) with what
    `handler(args)` returns (bytes, sent as they are; None: nothing). `handler` may also be a
    generator of chunks, for replies sent piece by piece."""

    def __init__(self, handler=None, greeting=b""):
        self.handler = handler or (lambda args: b"$-1\r\n" if args[0].upper() == b"GET"
                                   else b"+OK\r\n")
        self.greeting = greeting
        self.commands = []
        self.connections = 0
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.done = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def _accept(self):
        while not self.done.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            self.connections += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            c.settimeout(0.2)  # inside: stop() may have closed c already
            if self.greeting:
                c.sendall(self.greeting)
            while not self.done.is_set():
                try:
                    chunk = c.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                buf += chunk
                while True:
                    args, buf = self._parse(buf)
                    if args is None:
                        break
                    self.commands.append(args)
                    out = self.handler(args)
                    if out is None:
                        continue
                    for piece in ([out] if isinstance(out, bytes) else out):
                        if self.done.is_set():
                            return
                        c.sendall(piece)
        except OSError:
            return

    @staticmethod
    def _parse(buf):
        if not buf.startswith(b"*") or b"\r\n" not in buf:
            return None, buf
        head, rest = buf.split(b"\r\n", 1)
        args = []
        for _ in range(int(head[1:])):
            if b"\r\n" not in rest:
                return None, buf
            h, rest2 = rest.split(b"\r\n", 1)
            n = int(h[1:])
            if len(rest2) < n + 2:
                return None, buf
            args.append(rest2[:n])
            rest = rest2[n + 2:]
        return args, rest

    def stop(self):
        self.done.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.srv.close()


def rss_kib(pid):
    """The resident set of process pid, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------- TLS

def make_certs(directory):
    """A test CA and certificates made for this run (python3-cryptography), in directory:
    ca.pem; server.pem/.key for dot.test and 127.0.0.1 signed by the CA; expired.pem/.key
    (the same names, expired yesterday); rogue.pem/.key (the same names, signed by a CA
    nobody trusts). Returns a dict of paths and "pin", the base64 SHA-256 of server.pem's
    public key (SPKI)."""
    import base64
    import datetime
    import hashlib
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn):
        k = key()
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(k.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - day).not_valid_after(now + 3650 * day)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), True)
                .sign(k, hashes.SHA256()))
        return k, cert

    def leaf(issuer_key, issuer, before, after):
        k = key()
        cert = (x509.CertificateBuilder().subject_name(name("dot.test"))
                .issuer_name(issuer.subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(before).not_valid_after(after)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName("dot.test"),
                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               False)
                .sign(issuer_key, hashes.SHA256()))
        return k, cert

    def write(stem, k, cert):
        cp, kp = os.path.join(directory, stem + ".pem"), os.path.join(directory, stem + ".key")
        with open(cp, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            with open(kp, "wb") as f:
                f.write(k.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        return cp, kp

    ca_key, ca_cert = ca("rrcache test CA")
    rogue_key, rogue_ca = ca("rogue CA")
    out = {"ca": write("ca", None, ca_cert)[0]}
    k, c = leaf(ca_key, ca_cert, now - day, now + 365 * day)
    out["cert"], out["key"] = write("server", k, c)
    spki = c.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    out["pin"] = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    k, c = leaf(ca_key, ca_cert, now - 30 * day, now - day)
    out["expired_cert"], out["expired_key"] = write("expired", k, c)
    k, c = leaf(rogue_key, rogue_ca, now - day, now + 365 * day)
    out["rogue_cert"], out["rogue_key"] = write("rogue", k, c)
    return out


class UnboundTls:
    """unbound as a DNS-over-TLS server on 127.0.0.1:<port> with the given certificate and
    key, answering the records of local_data itself (a static zone dot.test.); extra lines go
    into its server: section, tail after it (a forward-zone: clause)."""

    def __init__(self, cert, key, local_data, extra="", tail=""):
        binary = need("unbound", "unbound")
        self.dir = tempfile.mkdtemp(prefix="rrc-unbound-tls-")
        self.port = free_port()
        conf = f"""server:
    interface: 127.0.0.1@{self.port}
    tls-port: {self.port}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{self.dir}"
    pidfile: "{self.dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    do-ip6: no
    do-udp: no
    access-control: 127.0.0.0/8 allow
    local-zone: "dot.test." static
{extra}"""
        conf += "".join(f'    local-data: "{d}"\n' for d in local_data)
        conf += "remote-control:\n    control-enable: no\n" + tail
        self.conf = os.path.join(self.dir, "unbound.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.binary = binary
        self.log = open(os.path.join(self.dir, "unbound.log"), "w")
        self.start()

    def start(self):
        self.proc = subprocess.Popen([self.binary, "-d", "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        end = time.time() + 15
        while True:
            with socket.socket() as s:
                s.settimeout(0.3)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.time() > end:
                self.stop()
                raise RuntimeError("unbound (TLS) did not start: " +
                                   open(os.path.join(self.dir, "unbound.log")).read())
            time.sleep(0.05)

    def kill(self):
        """Stops it (start() brings it back on the same port)."""
        end_process(self.proc)

    def stop(self):
        self.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsUpstream:
    """A scriptable DNS-over-TLS server on 127.0.0.1:<port> (Python's ssl, a thread per
    connection). handler(conn_index, queries) is called with the queries read so far on a
    connection not answered yet (dns.message objects, in order) and returns the replies to
    send now (any order, matched by ID; an empty list waits for more queries; None closes
    the connection). Every
    connection accepted is counted in .connections, every query in .seen."""

    def __init__(self, cert, key, handler):
        import ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.handler = handler
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.seen = []
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        while not self.stopping:
            try:
                raw, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                idx = self.connections
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(raw, idx), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, raw, idx):
        raw.settimeout(0.2)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except OSError:
            raw.close()
            return
        buf = b""
        queries = []
        try:
            while not self.stopping:
                try:
                    data = conn.recv(65535)
                except socket.timeout:
                    continue
                if not data:
                    break
                buf += data
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    n = struct.unpack("!H", buf[:2])[0]
                    q = dns.message.from_wire(buf[2:2 + n])
                    buf = buf[2 + n:]
                    queries.append(q)
                    with self.lock:
                        self.seen.append(q)
                replies = self.handler(idx, queries)
                if replies is None:
                    break
                for r in replies:
                    w = r.to_wire()
                    conn.sendall(struct.pack("!H", len(w)) + w)
                answered = {r.id for r in replies}
                queries = [q for q in queries if q.id not in answered]
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.accepter.join(2)
        for t in self.threads:
            t.join(2)
        self.sock.close()

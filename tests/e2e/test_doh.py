"""DNS over HTTPS for clients (listen_https, RFC 8484) over HTTP/2: kdig +https (POST and
GET) and curl get answers, with the content type and a max-age no longer than the answer's
TTL; malformed requests get their HTTP status; many streams share one connection; a client
that does not speak HTTP/2 or sends garbage is dropped."""
import base64
import os
import socket
import ssl
import subprocess
import tempfile

import dns.message

from helpers import free_port, metric, need


def doh_rrcache(rrcache, knot, certs):
    port = free_port()
    r = rrcache([f"127.0.0.1:{knot.port}"], config_extra=f"""listen_https: ["127.0.0.1:{port}"]
tls:
  cert_file: {certs['cert']}
  key_file: {certs['key']}
""")
    r.https_port = port
    return r


def curl(r, certs, *args):
    """curl over HTTP/2 to dot.test (pinned to 127.0.0.1): (status, headers, body bytes)."""
    binary = need("curl", "curl")
    p = subprocess.run([binary, "-s", "--http2", "--cacert", certs["ca"], "--resolve",
                        f"dot.test:{r.https_port}:127.0.0.1", "-D", "-", "-o", "-",
                        "--max-time", "10"] + list(args),
                       capture_output=True, timeout=20)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()[1] if lines and lines[0].startswith("HTTP/") else None
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return status, {k.lower(): v for k, v in headers.items()}, body


def url(r, path):
    return f"https://dot.test:{r.https_port}{path}"


def b64(msg):
    return base64.urlsafe_b64encode(msg.to_wire()).decode().rstrip("=")


def test_kdig_post_and_get(knot, certs, rrcache):
    r = doh_rrcache(rrcache, knot, certs)
    kdig = need("kdig", "knot-dnsutils")
    for method in ("+https", "+https-get"):
        out = subprocess.run([kdig, "@127.0.0.1", "-p", str(r.https_port), method,
                              f"+tls-ca={certs['ca']}", "+tls-hostname=dot.test",
                              "www.example.test", "A"],
                             capture_output=True, text=True, timeout=20).stdout
        assert "192.0.2.1" in out and "status: 200" in out, out
    assert metric(r, "rrcache_queries_total", transport="doh") == 2


def test_answers_and_cache_headers(knot, certs, rrcache):
    """GET and POST with curl: 200, application/dns-message, max-age the smallest TTL (the
    cached answer's aged TTL on the hit); the DNS answer is the one asked."""
    r = doh_rrcache(rrcache, knot, certs)
    q = dns.message.make_query("www.example.test.", "A")
    q.id = 0
    status, h, body = curl(r, certs, url(r, "/dns-query?dns=" + b64(q)))
    assert status == "200", (status, h)
    assert h["content-type"] == "application/dns-message"
    m = dns.message.from_wire(body)
    assert m.id == 0 and m.answer[0][0].address == "192.0.2.1"
    assert h["cache-control"] == f"max-age={m.answer[0].ttl}"
    assert int(h["content-length"]) == len(body)
    # A POST without a DNS message in it.
    status, h, body = curl(r, certs, "-X", "POST", "-H", "content-type: application/dns-message",
                           "--data-binary", "", url(r, "/dns-query"))
    assert status == "400"
    q2 = dns.message.make_query("mail.example.test.", "A")
    p = subprocess.run(["curl", "-s", "--http2", "--cacert", certs["ca"], "--resolve",
                        f"dot.test:{r.https_port}:127.0.0.1", "-o", "-", "-X", "POST", "-H",
                        "content-type: application/dns-message", "--data-binary", "@-",
                        url(r, "/dns-query")],
                       input=q2.to_wire(), capture_output=True, timeout=20)
    assert dns.message.from_wire(p.stdout).answer[0][0].address == "192.0.2.25"


def test_http_errors(knot, certs, rrcache):
    r = doh_rrcache(rrcache, knot, certs)
    q = dns.message.make_query("www.example.test.", "A")
    assert curl(r, certs, url(r, "/dns-query?dns=bad*base64"))[0] == "400"
    assert curl(r, certs, url(r, "/dns-query"))[0] == "400"
    assert curl(r, certs, url(r, "/resolve?dns=" + b64(q)))[0] == "404"
    assert curl(r, certs, "-X", "PUT", url(r, "/dns-query?dns=" + b64(q)))[0] == "405"
    assert curl(r, certs, "-X", "POST", "-H", "content-type: text/plain", "--data", "x",
                url(r, "/dns-query"))[0] == "415"
    big = tempfile.NamedTemporaryFile(delete=False)
    big.write(b"\0" * 70000)
    big.close()
    assert curl(r, certs, "-X", "POST", "-H", "content-type: application/dns-message",
                "--data-binary", "@" + big.name, url(r, "/dns-query"))[0] == "413"
    for status, n in (("400", 2), ("404", 1), ("405", 1), ("413", 1), ("415", 1)):
        assert metric(r, "rrcache_doh_refused_total", status=status) == n, status
    assert metric(r, "rrcache_queries_total", transport="doh") == 0


def test_many_streams_one_connection(knot, certs, rrcache):
    """30 requests multiplexed by curl on one HTTP/2 connection: every answer right, one
    TLS handshake."""
    r = doh_rrcache(rrcache, knot, certs)
    names = [f"n{i}.example.test." for i in range(30)]
    args = ["--parallel", "--parallel-max", "30"]
    outs = []
    for i, n in enumerate(names):
        q = dns.message.make_query(n, "A")
        q.id = 0
        args += ["-o", f"/tmp/rrc-doh-{r.https_port}-{i}", url(r, "/dns-query?dns=" + b64(q))]
    p = subprocess.run(["curl", "-s", "--http2", "--cacert", certs["ca"], "--resolve",
                        f"dot.test:{r.https_port}:127.0.0.1"] + args,
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    for i in range(30):
        path = f"/tmp/rrc-doh-{r.https_port}-{i}"
        with open(path, "rb") as f:
            outs.append(dns.message.from_wire(f.read()))
        os.unlink(path)
    for i, m in enumerate(outs):
        assert m.answer[0][0].address == f"198.51.100.{i % 250 + 1}"
    assert metric(r, "rrcache_queries_total", transport="doh") == 30
    assert metric(r, "rrcache_dot_handshakes_total") == 1


def test_not_http2_and_garbage(knot, certs, rrcache):
    """A client that offers only HTTP/1.1 gets no HTTP/2 session; one that sends garbage
    after the handshake is closed. Both counted."""
    r = doh_rrcache(rrcache, knot, certs)
    p = subprocess.run(["curl", "-s", "--http1.1", "--cacert", certs["ca"], "--resolve",
                        f"dot.test:{r.https_port}:127.0.0.1", "-o", "/dev/null", "-w",
                        "%{http_code}", url(r, "/dns-query?dns=AAAB")],
                       capture_output=True, text=True, timeout=20)
    assert p.stdout in ("000", ""), p.stdout
    ctx = ssl.create_default_context(cafile=certs["ca"])
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", r.https_port), timeout=5),
                        server_hostname="dot.test")
    assert s.selected_alpn_protocol() == "h2"
    s.sendall(b"this is not the HTTP/2 connection preface\r\n\r\n" * 3)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, ssl.SSLError, socket.timeout):
        pass
    s.close()
    assert metric(r, "rrcache_doh_connections_closed_total") == 2

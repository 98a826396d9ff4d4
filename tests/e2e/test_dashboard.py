"""The dashboard: one self-contained page, opened in headless Chromium, live from the API."""
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from helpers import query


def chromium(args, url, timeout=90):
    exe = shutil.which("chromium")
    assert exe, "chromium is missing: apt-get install chromium"
    # A virtual time budget lets the page poll a few times before the DOM is taken.
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--no-first-run",
                           "--virtual-time-budget=5000"] + args + [url],
                          capture_output=True, text=True, timeout=timeout)


def shown(dom, ident):
    m = re.search(rf'id="{ident}"[^>]*>([^<]*)<', dom)
    return m.group(1) if m else None


def test_dashboard_shows_what_the_api_says(fault, rrcache, tmp_path):
    up = fault()
    r = rrcache([f"127.0.0.1:{up.port}"], stats_extra='  top_sample: 1\n  token: "t"\n')
    # A dynamic block, to be listed.
    assert r.http("/api/v1/blocks", "POST", body="prefix=198.51.100.0/24",
                  headers={"Authorization": "Bearer t",
                           "Content-Type": "application/x-www-form-urlencoded"})[0] == 200
    status, headers, page = r.http("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    # Self-contained: no script, style or font from anywhere else.
    assert not re.search(rb'(src|href)="(https?:)?//', page)
    assert "default-src 'none'" in headers["Content-Security-Policy"]

    # Live traffic while the page is open, for the charts and the screenshot.
    stop = threading.Event()

    def load():
        i = 0
        while not stop.is_set() and i < 20000:
            query(r.host, r.port, f"dash{i % 9}.test.")
            if i % 5 == 0:
                query(r.host, r.port, f"nxdash{i % 3}.test.")
            i += 1
            time.sleep(0.005)
    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(1.5)
        shot = os.path.join(os.environ.get("RRC_ARTIFACTS", str(tmp_path)), "dashboard.png")
        out = chromium(["--window-size=1400,1600", f"--screenshot={shot}"],
                       f"http://127.0.0.1:{r.stats_port}/")
        assert out.returncode == 0, out.stderr[-2000:]
    finally:
        stop.set()
        t.join(30)
    with open(shot, "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000

    # Traffic stopped: the figures are still, so the page must show exactly the API's.
    time.sleep(1.2)  # the top-K tables are published once a second
    out = chromium(["--dump-dom"], f"http://127.0.0.1:{r.stats_port}/")
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    st = json.loads(r.http("/api/v1/stats")[2])
    ups = json.loads(r.http("/api/v1/upstreams")[2])["upstreams"]
    top = json.loads(r.http("/api/v1/top")[2])
    assert int(re.search(r'data-polls="(\d+)"', dom).group(1)) >= 2, "the page did not poll"
    assert shown(dom, "status").startswith("live")
    assert shown(dom, "version") == st["version"]
    assert shown(dom, "total-queries") == str(st["queries"]["total"])
    hits, misses = st["cache"]["hits"], st["cache"]["misses"]
    assert shown(dom, "hit-ratio-total") == f"{100 * hits / (hits + misses):.1f}%"
    assert shown(dom, "upstreams-up") == f"{sum(u['up'] for u in ups)} / {len(ups)}"
    assert shown(dom, "upstream-queries") == str(st["upstream"]["queries"])
    for rcode in ("NOERROR", "NXDOMAIN"):
        assert shown(dom, f"rcode-{rcode}") == str(st["rcodes"][rcode])
    assert st["rcodes"]["NXDOMAIN"] > 0
    # The top names table lists the API's names in the API's order.
    table = dom[dom.index('id="top-names"'):]
    table = table[:table.index("</table>")]
    names = re.findall(r'<td class="k"[^>]*>([^<]*)</td>', table)
    assert names and names == [e["key"] for e in top["names"]]
    assert shown(dom, "qps") is not None
    # Queries a second by transport (traffic has stopped: all zero, all four named).
    assert shown(dom, "transports") == "udp 0 · tcp 0 · dot 0 · doh 0"
    assert shown(dom, "blocks-active") == "1"
    table = dom[dom.index('id="blocks"'):]
    assert re.search(r'<td class="k"[^>]*>198\.51\.100\.0/24</td><td>manual</td>', table)

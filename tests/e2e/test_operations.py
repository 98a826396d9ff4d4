"""Operating rrcache: upstreams by host name, log targets and formats, log rotation, and a
restart without losing queries."""
import os
import shutil
import tempfile
import time

import dns.rcode
import pytest

from helpers import FaultUpstream, Rrcache, default_answer


def wait_for(cond, timeout=5.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


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

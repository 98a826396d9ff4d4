import shutil
import tempfile

import pytest

from helpers import FaultUpstream, Knot, Rrcache, make_certs


@pytest.fixture(scope="session")
def knot():
    k = Knot()
    yield k
    k.stop()


@pytest.fixture(scope="module")
def certs():
    """A test CA and certificates for dot.test (helpers.make_certs), one set per module."""
    d = tempfile.mkdtemp(prefix="rrc-certs-")
    yield make_certs(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fault():
    """A fresh scriptable upstream per test."""
    started = []

    def make(handler=None):
        f = FaultUpstream(handler)
        started.append(f)
        return f
    yield make
    for f in started:
        f.stop()


@pytest.fixture
def paced():
    """Fast upstreams answering after a delay (helpers.PacedUpstream), stopped after the test."""
    from helpers import PacedUpstream
    started = []

    def make(**kw):
        p = PacedUpstream(**kw)
        started.append(p)
        return p
    yield make
    for p in started:
        p.stop()


@pytest.fixture
def rrcache():
    """Starts rrcache instances; each is stopped (SIGTERM, exit 0 checked) after the test."""
    started = []

    def make(upstreams, **kw):
        r = Rrcache(upstreams, **kw)
        started.append(r)
        return r
    yield make
    errors = []
    for r in started:
        if r.proc.poll() is None or r.proc.returncode is not None:
            try:
                r.stop(check=True)
            except AssertionError as e:
                errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def redis():
    """Starts redis-server instances of the test's own; each is stopped after the test."""
    from helpers import Redis
    started = []

    def make(**kw):
        r = Redis(**kw)
        started.append(r)
        return r
    yield make
    for r in started:
        r.stop()


@pytest.fixture
def fake_redis():
    """Starts hostile stand-ins for Redis (helpers.FakeRedis); each is stopped after the test."""
    from helpers import FakeRedis
    started = []

    def make(**kw):
        f = FakeRedis(**kw)
        started.append(f)
        return f
    yield make
    for f in started:
        f.stop()

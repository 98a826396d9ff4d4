"""The load and soak run (tests/load/soak.py) for 60 s: at 80 % of full load with a MIX
workload and an upstream restarted halfway, no answer is lost beyond the restart, RSS is flat
once the cache is full, and no descriptor leaks. Its figures are printed (pytest -s).

Not in the sanitizer build: AddressSanitizer keeps freed memory in quarantine (up to 256 MiB)
and costs several times the CPU, so RSS and rate would measure the sanitizer; its leak check
at exit covers the same ground there."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "load"))

import soak  # noqa: E402
from helpers import RRCACHE  # noqa: E402


def sanitized():
    out = subprocess.run(["ldd", RRCACHE], capture_output=True, text=True).stdout
    return "libasan" in out or "libubsan" in out


@pytest.mark.skipif(sanitized(), reason="sanitizer build: RSS and rate would measure ASan")
def test_soak_60s():
    report = soak.soak(60)
    print(json.dumps(report))
    assert soak.check(report) == [], report

#!/usr/bin/python3
"""The cache file (cache.save_file) with 1,000,000 entries: the time to save them and to load
them back, with a fleet secret (each entry's seal vouches for its answer) and without one
(ldns parses each answer), and the file's size. Builds bench/cachefile_load.c against the
plain build's library (cmake --build build first). Medians of 3; writes its section of
bench/RESULTS.md.

Usage: bench/cachefile.py [ENTRIES]
"""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from instructions import write_section  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    work = tempfile.mkdtemp(prefix="rrc-cachefile-")
    exe = os.path.join(work, "cachefile_load")
    libs = subprocess.run(["pkg-config", "--libs", "ldns", "libcrypto"], capture_output=True,
                          text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I", os.path.join(ROOT, "include"),
                    os.path.join(HERE, "cachefile_load.c"),
                    os.path.join(ROOT, "build", "src", "librrc_core.a")] + libs +
                   ["-lpthread", "-o", exe], check=True)
    runs = [list(map(int, subprocess.run([exe, str(n), os.path.join(work, "cache.bin")],
                                         capture_output=True, text=True,
                                         check=True).stdout.split()))
            for _ in range(3)]
    med = [sorted(r[i] for r in runs)[1] for i in range(4)]
    print(f"{n} entries: save {med[0]} ms, load {med[1]} ms sealed, {med[2]} ms parsed, "
          f"{med[3] / n:.0f} bytes each")
    head = "## Cache file (bench/cachefile.py)"
    write_section(head, f"{head}\n\nMeasured {time.strftime('%Y-%m-%d')}; {n:,} entries "
                  f"(one A record each), medians of 3.\n\n| figure | value | target |\n"
                  f"|---|---|---|\n| save | {med[0]} ms | |\n"
                  f"| load, with redis.key_secret (sealed) | {med[1]} ms | < 1 s |\n"
                  f"| load, without (ldns parses each answer) | {med[2]} ms | |\n"
                  f"| file size | {med[3] / n:.0f} bytes per entry | |\n")


if __name__ == "__main__":
    main()

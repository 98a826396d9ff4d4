#!/usr/bin/python3
"""The man pages against the program: rrcache.yaml(5) documents exactly the keys of
src/config.c's key tables, each with the default the shipped config/rrcache.yaml has, and
the shipped file names every key; rrcache(8) documents exactly the flags of `rrcache --help`;
both render without a warning (groff -ww) and through man -l.

Usage: tests/man_pages.py SOURCE_DIR RRCACHE_BINARY
"""
import os
import re
import subprocess
import sys

import yaml


def config_keys(src):
    """section.key for every entry of the key tables (top-level keys without a section)."""
    text = open(os.path.join(src, "src", "config.c")).read()
    tables = dict(re.findall(r"static const struct key (\w+)_keys\[\] = \{(.*?)\{NULL, 0, 0, 0, 0, NULL\}\};",
                             text, re.S))
    keys = set()
    for name, kind, sub in re.findall(r'\{"(\w+)", (K_\w+)(?:, 0, 0, 0, (\w+)_keys)?', tables["top"]):
        if kind == "K_SECTION":
            for k in re.findall(r'\{"(\w+)"', tables[sub]):
                keys.add(f"{name}.{k}")
        else:
            keys.add(name)
    return keys


def man_entries(path):
    """{key: entry text} of the .TP/.B entries of a man page."""
    text = open(path).read()
    out = {}
    for m in re.finditer(r"^\.TP\n\.B ([a-z0-9_.]+)\n(.*?)(?=^\.(?:TP|SH)\b)", text, re.S | re.M):
        out[m.group(1)] = m.group(2)
    return out


def shipped_values(path):
    """{section.key: value} of the shipped file's scalar settings."""
    doc = yaml.safe_load(open(path))
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = v2
        else:
            out[k] = v
    return out


def render(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v == "":
        return '""'
    return str(v)


def main():
    src, binary = sys.argv[1], sys.argv[2]
    errors = []
    keys = config_keys(src)
    if len(keys) < 50:
        errors.append(f"only {len(keys)} keys found in src/config.c: the parser of this check is stale")
    man5 = os.path.join(src, "docs", "man", "rrcache.yaml.5")
    man8 = os.path.join(src, "docs", "man", "rrcache.8")
    entries = man_entries(man5)
    for k in sorted(keys - set(entries)):
        errors.append(f"rrcache.yaml.5: key {k} is not documented")
    for k in sorted(set(entries) - keys):
        errors.append(f"rrcache.yaml.5: documents {k}, which rrcache does not read")
    shipped_path = os.path.join(src, "config", "rrcache.yaml")
    shipped_text = open(shipped_path).read()
    for k, v in shipped_values(shipped_path).items():
        if isinstance(v, (list, dict)) or k not in entries:
            continue
        m = re.search(r"Default \\fB(.*?)\\fR", entries[k])
        if not m:
            errors.append(f"rrcache.yaml.5: {k} states no default (the shipped file has {render(v)})")
        elif m.group(1).replace("\\-", "-") != render(v):
            errors.append(f"rrcache.yaml.5: {k} default {m.group(1)}, the shipped file has {render(v)}")
    # The shipped file names every key, set or in a comment.
    for k in sorted(keys):
        section, _, name = k.rpartition(".")
        if section:
            block = re.search(rf"^{section}:\n((?:[ #].*\n|\n)*)", shipped_text, re.M)
            found = block and re.search(rf"\b{name}:", block.group(1))
        else:
            found = re.search(rf"^{name}:", shipped_text, re.M)
        if not found:
            errors.append(f"config/rrcache.yaml: key {k} is not in the shipped file")
    # Flags.
    helptext = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    flags = set(re.findall(r"--([a-z][a-z-]+)", helptext))
    man8_flags = set(re.findall(r"\\-\\-([a-z][a-z\\-]+)", open(man8).read()))
    man8_flags = {f.replace("\\-", "-").rstrip("-") for f in man8_flags}
    for f in sorted(flags - man8_flags):
        errors.append(f"rrcache.8: --{f} is not documented")
    for f in sorted(man8_flags - flags):
        errors.append(f"rrcache.8: documents --{f}, which rrcache --help does not list")
    for page in (man8, man5):
        g = subprocess.run(["groff", "-ww", "-man", "-Tutf8", "-z", page], capture_output=True,
                           text=True)
        if g.returncode != 0 or g.stderr.strip():
            errors.append(f"{page}: groff -ww: {g.stderr.strip()}")
        m = subprocess.run(["man", "-l", page], capture_output=True, text=True,
                           env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        if m.returncode != 0 or m.stderr.strip() or "NAME" not in m.stdout:
            errors.append(f"{page}: man -l: {m.returncode} {m.stderr.strip()}")
    for e in errors:
        print(e)
    print(f"man pages: {len(keys)} keys, {len(flags)} flags checked, {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

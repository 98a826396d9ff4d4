#!/usr/bin/python3
"""docs/protocol.md and the code agree: every rule ID the code or the tests cite (R4, U5,
C1, L2, D3...) has its row in docs/protocol.md, every row has a test, and every test the page
names exists (a unit test function, an e2e test function, or a fuzz target).

Usage: tests/protocol_doc.py [SOURCE_DIR]
"""
import os
import re
import sys

ID = re.compile(r"\b([RUCLDH][0-9]{1,2})\b")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    doc = open(os.path.join(root, "docs", "protocol.md")).read()
    rows = {}
    for line in doc.splitlines():
        m = re.match(r"^\| ([RUCLDH][0-9]{1,2}) \|", line)
        if m:
            rows[m.group(1)] = line
    errors = []
    # IDs cited in comments and docstrings of the code and the tests.
    cited = {}
    for d in ("src", "include/rrcache", "tests/unit", "tests/e2e", "tests/fuzz"):
        for f in sorted(os.listdir(os.path.join(root, d))):
            if not f.endswith((".c", ".h", ".py")):
                continue
            text = open(os.path.join(root, d, f)).read()
            for c in re.findall(r"/\*.*?\*/|//[^\n]*|#[^\n]*|\"\"\".*?\"\"\"", text, re.S):
                for i in ID.findall(c):
                    cited.setdefault(i, f"{d}/{f}")
    for i, where in sorted(cited.items()):
        if i not in rows:
            errors.append(f"{where} cites {i}, which docs/protocol.md does not define")
    # Every test named on the page exists.
    unit = {}
    for f in os.listdir(os.path.join(root, "tests/unit")):
        if f.startswith("test_") and f.endswith(".c"):
            unit[f[:-2]] = set(re.findall(r"^static void (test_\w+)\(",
                                          open(os.path.join(root, "tests/unit", f)).read(),
                                          re.M))
    e2e = {}
    for f in os.listdir(os.path.join(root, "tests/e2e")):
        if f.startswith("test_") and f.endswith(".py"):
            e2e[f[:-3]] = set(re.findall(r"^def (test_\w+)\(",
                                         open(os.path.join(root, "tests/e2e", f)).read(), re.M))
    fuzz = {f[:-2] for f in os.listdir(os.path.join(root, "tests/fuzz")) if f.startswith("fuzz_")}
    for rid, line in sorted(rows.items()):
        tests = line.rstrip("|").split("|")[-1]
        if "`" not in tests:
            errors.append(f"{rid}: no test named")
        for kind, name in re.findall(r"(unit|e2e|fuzz)? ?`([^`]+)`", tests):
            name = name.split("[")[0]
            if name in fuzz:
                continue
            if "::" not in name:
                if name.startswith("test_") and name in e2e:
                    continue  # a whole file
                errors.append(f"{rid}: `{name}` is not a test file or fuzz target")
                continue
            mod, fn = name.split("::")
            if fn not in unit.get(mod, set()) | e2e.get(mod, set()):
                errors.append(f"{rid}: {name} does not exist")
    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"protocol.md: {len(rows)} rules, each with tests that exist; "
          f"{len(cited)} IDs cited by the code, all defined")
    return 0


if __name__ == "__main__":
    sys.exit(main())

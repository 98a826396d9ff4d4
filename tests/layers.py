#!/usr/bin/python3
"""The module layers of docs/architecture.md, checked against the #include lines.

Each module (src/<m>.c and include/rrcache/<m>.h) has a layer; a file may include the
headers of its own layer and of the layers below, never of a layer above. The pure modules
include no event loop (uv.h) and no network library. No two modules include each other,
directly or through others. The stateful modules keep their structs in their .c file.
A new module must be given its layer here: an unknown file fails the check.

Usage: tests/layers.py [SOURCE_DIR]
"""
import os
import re
import sys

PURE, IO, QUERY, WORKER, SERVER, TOP = range(6)
LAYER_NAMES = ["pure", "I/O", "query", "worker", "server", "http/main"]
LAYERS = {
    # pure: no loop, no sockets; unit-tested and fuzzed alone
    "defs": PURE, "log": PURE, "policy": PURE, "ratelimit": PURE, "dynblock": PURE, "route": PURE, "local": PURE, "cachefile": PURE, "tls": PURE, "doh": PURE, "addr": PURE, "buf": PURE, "wire": PURE, "msg": PURE,
    "cache": PURE, "balancer": PURE, "form": PURE, "frame": PURE, "acl": PURE, "config": PURE, "pool": PURE,
    "l2value": PURE, "redis_master": PURE, "redis_slots": PURE, "topk": PURE, "stats": PURE, "cfg_ref": PURE, "conn_limit": PURE,
    # I/O: each owns its sockets and handles on a loop it is given
    "client": IO, "env": IO, "dnstap": IO, "notify": IO, "redis_uv": IO, "upstream": IO,
    "redis_tier": IO, "redis_admin": IO, "redis_sentinel": IO, "redis_cluster": IO, "listener": IO,
    "query": QUERY,
    "worker": WORKER,
    "server": SERVER,
    "http": TOP, "main": TOP,
}
# Headers a pure module must not include.
NOT_PURE = ("uv.h", "hiredis/", "microhttpd.h", "fstrm.h")
# Structs whose definition is private to their module's .c file.
OPAQUE = ["rrc_worker", "rrc_queries", "rrc_listeners", "rrc_upstreams", "rrc_redis_tier",
          "rrc_redis_admin", "rrc_server", "rrc_http", "rrc_cache", "rrc_dnstap",
          "rrc_conn_limit", "rrc_acl", "rrc_tls", "rrc_tls_creds", "rrc_doh",
          "rrc_redis_master", "rrc_redis_sentinel"]

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def files(root):
    for d, ext in (("src", ".c"), ("include/rrcache", ".h")):
        for f in sorted(os.listdir(os.path.join(root, d))):
            if f.endswith(ext):
                yield os.path.join(d, f), f[: -len(ext)]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    errors = []
    deps = {}
    for rel, mod in files(root):
        if mod not in LAYERS:
            errors.append(f"{rel}: module '{mod}' has no layer in tests/layers.py")
            continue
        text = open(os.path.join(root, rel)).read()
        for kind, inc in INCLUDE.findall(text):
            if kind == '"' and inc.startswith("rrcache/"):
                dep = inc[len("rrcache/"):-2]
                if dep not in LAYERS:
                    errors.append(f"{rel}: includes unknown module header {inc}")
                    continue
                if LAYERS[dep] > LAYERS[mod]:
                    errors.append(f"{rel}: {LAYER_NAMES[LAYERS[mod]]} module '{mod}' "
                                  f"includes {inc} of the higher layer "
                                  f"{LAYER_NAMES[LAYERS[dep]]}")
                if dep != mod:
                    deps.setdefault(mod, set()).add(dep)
            elif LAYERS[mod] == PURE and inc.startswith(NOT_PURE):
                errors.append(f"{rel}: pure module '{mod}' includes <{inc}>")
        if rel.endswith(".h"):
            for name in OPAQUE:
                if re.search(r"^struct %s \{" % name, text, re.M):
                    errors.append(f"{rel}: defines struct {name}, which is private to its "
                                  f".c file")
    # No circle: a depth-first walk of the module graph.
    state = {}

    def walk(m, path):
        state[m] = 1
        for d in sorted(deps.get(m, ())):
            if state.get(d) == 1:
                errors.append("include circle: " + " -> ".join(path + [m, d]))
            elif d not in state:
                walk(d, path + [m])
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            walk(m, [])
    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"layers: {len(LAYERS)} modules, {sum(len(v) for v in deps.values())} module "
          f"dependencies, all downward, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())

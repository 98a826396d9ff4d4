"""The monitoring kit (dist/monitoring): the alert rules pass promtool's checks and its unit
tests, and the rules and the Grafana dashboard name only metrics a running rrcache exports."""
import json
import os
import re
import shutil
import subprocess

import pytest

KIT = os.path.join(os.path.dirname(__file__), "..", "..", "dist", "monitoring")
# Prometheus's own series, not rrcache's.
NOT_RRCACHE = {"up"}


def exported_families(r):
    text = r.http("/metrics")[2].decode()
    return set(re.findall(r"^# TYPE (\w+) \w+$", text, re.M))


def names_in(expr):
    """Metric names in a PromQL expression (functions, keywords and labels left out)."""
    expr = re.sub(r'\{[^}]*\}', "", expr)  # label matchers
    expr = re.sub(r'"[^"]*"', "", expr)
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", expr))
    keywords = {"by", "on", "and", "or", "unless", "without", "ignoring", "group_left",
                "group_right", "bool", "offset", "le", "instance", "upstream", "pool", "job", "rcode",
                "result", "outcome", "action", "reason", "transport"}
    out = set()
    for w in words - keywords:
        if re.match(r"^(rrcache|process)_", w) or w in NOT_RRCACHE:
            out.add(re.sub(r"_(bucket|sum|count)$", "", w))
    return out


def test_alert_rules_check_and_unit_tests():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus"
    for args in (["check", "rules", "rrcache-alerts.yml"],
                 ["test", "rules", "rrcache-alerts.test.yml"]):
        out = subprocess.run([promtool] + args, cwd=KIT, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_kit_names_only_exported_metrics(fault, rrcache, redis, tmp_path):
    """With Redis and dnstap on, so that every family is exported."""
    import yaml
    up = fault()
    rd = redis()
    r = rrcache([f"127.0.0.1:{up.port}"],
                config_extra=f'redis:\n  url: "{rd.url}"\n  key_secret: "k"\n'
                             f'dnstap:\n  file: "{tmp_path / "q.dnstap"}"\n')
    r.query("kit.test.")
    families = exported_families(r) | NOT_RRCACHE
    rules = yaml.safe_load(open(os.path.join(KIT, "rrcache-alerts.yml")))
    alerts = [rule for g in rules["groups"] for rule in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "RrcacheUpstreamDown", "RrcacheServfailRatio", "RrcacheRedisUnreachable",
        "RrcacheCacheHitRatioCollapse", "RrcacheDnstapDrops"}
    for a in alerts:
        used = names_in(a["expr"])
        assert used, a["alert"]
        assert used <= families, (a["alert"], used - families)
    dash = json.load(open(os.path.join(KIT, "grafana-dashboard.json")))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used_by_dash = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            used = names_in(t["expr"])
            assert used, (p["title"], t["expr"])
            assert used <= families, (p["title"], used - families)
            used_by_dash |= used
    # The dashboard shows most of what rrcache exports (the top-K gauge and the build info
    # live in the JSON API and the variable query).
    shown = used_by_dash | {"rrcache_build_info"}
    missing = families - shown - NOT_RRCACHE
    assert not missing, sorted(missing)

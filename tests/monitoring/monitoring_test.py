#!/usr/bin/env python3
"""Checks deploy/monitoring (alerts, PrometheusRule, scrape objects, dashboard, README) against
promtool and against the metrics the binaries actually serve.

Usage:
  monitoring_test.py [--metrics-from BINARY_DIR]
  monitoring_test.py --write-prometheusrule     # copy alerts.yaml's groups into prometheusrule.yaml

Checks:
  - every YAML file parses; `promtool check rules` on alerts.yaml; `promtool test rules` on
    tests/monitoring/alerts_test.yaml, which must test every alert of alerts.yaml firing;
  - the alerts the issue asks for exist, each with a severity label (warning or critical) and
    summary and description annotations;
  - every alert has a runbook_url annotation ending in deploy/monitoring/README.md#ALERTNAME
    (lower case), and README.md has that section;
  - prometheusrule.yaml is a PrometheusRule whose spec equals alerts.yaml;
  - servicemonitor.yaml and scrape-config.yaml scrape port `metrics` as the jobs the alerts
    name (certcast-server, certcast-client); `promtool check config` on scrape-config.yaml
    (Debian's promtool lacks Kubernetes service discovery: then a copy with static targets is
    checked instead);
  - with a kubectl that has kustomize v5: components/server-metrics and the tenant component render
    on deploy/base and deploy/components/tenant, and the ServiceMonitor and PodMonitor select
    what they render;
  - dashboard.json: valid JSON, schemaVersion >= 38, the ${datasource} and certificate
    variables, every panel with the ${datasource} datasource and targets, every issue metric
    shown; its expressions and the ```promql blocks of README.md parse (as recording rules for
    `promtool check rules`);
  - every certcast_ metric name used in the rules, the dashboard and README.md (histogram
    suffixes stripped) is one of the issue's metric names or one the binaries serve.

With --metrics-from BINARY_DIR it also starts BINARY_DIR/server/certcast-server and
BINARY_DIR/client/certcast-client (plaintext, loopback, a source directory in kubelet layout
minted with the openssl CLI), waits until the client has applied version 1, scrapes both
/metrics endpoints (ports from the "metrics on port N" log lines) and checks that the names,
labels and values the alerts rely on are there: every gauge of the issue list plus the counters
and histogram this run exercises (prometheus-cpp shows a labelled family only once a series of
it exists, so counters of events that did not happen may be absent). A binary without
--metrics-listen fails this part, naming the flag.

Needs Python 3, PyYAML (Debian: python3-yaml) and promtool (Debian: prometheus); prints SKIP and
exits 77 (ctest: skipped) without them, or fails with CI=true. Without a kubectl with kustomize
v5 the components check alone is skipped (a failure with CI=true). Ends with "N passed, N
failed"; exits 1 when a check failed.
"""

import argparse
import calendar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    yaml = None

DEBIAN_PYTHON = "/usr/bin/python3"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
MONITORING = os.path.join(ROOT, "deploy", "monitoring")
ALERTS = os.path.join(MONITORING, "alerts.yaml")
PROMETHEUS_RULE = os.path.join(MONITORING, "prometheusrule.yaml")
SERVICE_MONITOR = os.path.join(MONITORING, "servicemonitor.yaml")
SCRAPE_CONFIG = os.path.join(MONITORING, "scrape-config.yaml")
DASHBOARD = os.path.join(MONITORING, "dashboard.json")
README = os.path.join(MONITORING, "README.md")
ALERTS_TEST = os.path.join(ROOT, "tests", "monitoring", "alerts_test.yaml")

# The public metric interface fixed by the issue: name -> labels every series of it carries.
SERVER_METRICS = {
    "certcast_certificate_version": {"certificate"},
    "certcast_certificate_not_after_seconds": {"certificate"},
    "certcast_source_present": {"certificate"},
    "certcast_source_rejections_total": {"certificate", "reason"},
    "certcast_publications_total": {"certificate"},
    "certcast_certificate_pinned": {"certificate"},
    "certcast_clients_connected": {"certificate"},
    "certcast_clients_behind": {"certificate"},
    "certcast_oldest_unacked_push_age_seconds": {"certificate"},
    "certcast_acks_total": {"certificate"},
    "certcast_nacks_total": {"certificate", "reason"},
    "certcast_hook_warnings_total": {"certificate"},
    "certcast_push_to_ack_seconds": {"certificate"},  # histogram
    "certcast_stream_errors_total": {"code"},
    "certcast_auth_denials_total": {"reason"},
    "certcast_build_info": {"version", "commit"},
    "certcast_namespaces_missing": {"certificate"},  # with --watch-namespaces only
    "certcast_namespace_clients_on_current": {"certificate", "namespace"},  # the same
}
CLIENT_METRICS = {
    "certcast_client_applied_version": {"certificate"},
    "certcast_client_not_after_seconds": {"certificate"},
    "certcast_client_last_apply_timestamp_seconds": {"certificate"},
    "certcast_client_apply_failures_total": {"certificate", "sink"},
    "certcast_client_hook_failures_total": {"certificate"},
    "certcast_client_reconnects_total": set(),
    "certcast_client_heartbeat_misses_total": set(),
    "certcast_client_connected": set(),
    "certcast_client_last_server_message_timestamp_seconds": set(),
    "certcast_build_info": {"version", "commit"},
}
ISSUE_METRICS = set(SERVER_METRICS) | set(CLIENT_METRICS)

# What a scrape must show once one client has applied version 1 of one certificate: all gauges,
# and the counters/histogram that this run increments (a publication, an ACK of a push).
SERVER_EXPECTED = {
    "certcast_certificate_version", "certcast_certificate_not_after_seconds",
    "certcast_source_present", "certcast_certificate_pinned", "certcast_clients_connected",
    "certcast_clients_behind", "certcast_oldest_unacked_push_age_seconds", "certcast_build_info",
    "certcast_publications_total", "certcast_acks_total", "certcast_push_to_ack_seconds",
}
CLIENT_EXPECTED = {
    "certcast_client_applied_version", "certcast_client_not_after_seconds",
    "certcast_client_last_apply_timestamp_seconds", "certcast_build_info",
    "certcast_client_connected", "certcast_client_last_server_message_timestamp_seconds",
}

# Alerts the issue asks for: name -> severities.
REQUIRED_ALERTS = {
    "CertcastCertificateExpiring": {"warning", "critical"},
    "CertcastClientsBehind": {"warning"},
    "CertcastPushUnacknowledged": {"warning"},
    "CertcastSourceRejected": {"warning"},
    "CertcastSourceMissing": {"warning"},
    "CertcastClientVersionMismatch": {"warning"},
    "CertcastServerDown": {"critical"},
    "CertcastClientDisconnected": {"warning"},
}
SEVERITIES = {"warning", "critical"}
JOBS = {"certcast-server", "certcast-client"}
METRICS_PORT = 9090

METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_])certcast_[a-z0-9_]+")
CERTIFICATE = "wildcard"
START_DEADLINE = 20.0   # seconds until a binary logs its ports
APPLY_DEADLINE = 30.0   # seconds until version 1 is applied and acknowledged in the metrics


# ---- helpers -----------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, problems):
        problems = [p for p in problems if p]
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems:
                for i, line in enumerate(str(p).splitlines() or [""]):
                    print(("  - " if i == 0 else "    ") + line)
        else:
            self.passed += 1
            print(f"ok   {name}")


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def strip_histogram_suffix(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def names_in(text):
    return {strip_histogram_suffix(n) for n in METRIC_NAME.findall(text)}


def alert_rules(groups_doc):
    for group in (groups_doc or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                yield group.get("name"), rule


def all_rules(groups_doc):
    for group in (groups_doc or {}).get("groups") or []:
        yield from group.get("rules") or []


# ---- static checks -----------------------------------------------------------------------

def check_yaml_parses():
    problems = []
    paths = [ALERTS, PROMETHEUS_RULE, SERVICE_MONITOR, SCRAPE_CONFIG, ALERTS_TEST]
    for directory, _, files in os.walk(os.path.join(MONITORING, "components")):
        paths += [os.path.join(directory, f) for f in files if f.endswith(".yaml")]
    for path in paths:
        try:
            load_yaml_all(path)
        except (OSError, yaml.YAMLError) as e:
            problems.append(f"{os.path.relpath(path, ROOT)}: {e}")
    return problems


def check_promtool_rules(promtool):
    result = run([promtool, "check", "rules", ALERTS])
    if result.returncode != 0:
        return [f"promtool check rules failed:\n{result.stdout}{result.stderr}"]
    return []


def check_promtool_test(promtool):
    result = run([promtool, "test", "rules", ALERTS_TEST], cwd=os.path.dirname(ALERTS_TEST))
    if result.returncode != 0:
        return [f"promtool test rules failed:\n{result.stdout}{result.stderr}"]
    return []


def check_alerts_tested(alerts):
    tests = load_yaml(ALERTS_TEST) or {}
    fired = set()
    for test in tests.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            if case.get("exp_alerts"):
                fired.add(case.get("alertname"))
    names = {rule["alert"] for _, rule in alert_rules(alerts)}
    return [f"alert {n} is never shown firing in {os.path.relpath(ALERTS_TEST, ROOT)}"
            for n in sorted(names - fired)]


RUNBOOK_URL = re.compile(r"^https://\S+/deploy/monitoring/README\.md#([a-z0-9-]+)$")


def github_anchors(markdown):
    """The anchors GitHub gives the headings of `markdown` (lower case, punctuation dropped,
    spaces to dashes), plus explicit <a id="..."> anchors."""
    anchors = set(re.findall(r'<a id="([^"]+)"', markdown))
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def check_runbook_urls(alerts):
    """Every alert links to its own runbook section, and that section exists."""
    problems = []
    with open(README, encoding="utf-8") as f:
        anchors = github_anchors(f.read())
    for group, rule in alert_rules(alerts):
        name = rule["alert"]
        url = str((rule.get("annotations") or {}).get("runbook_url", ""))
        match = RUNBOOK_URL.match(url)
        if not match:
            problems.append(f"{group}/{name}: runbook_url {url!r} is not "
                            ".../deploy/monitoring/README.md#ANCHOR")
            continue
        if match.group(1) != name.lower():
            problems.append(f"{group}/{name}: runbook_url anchor #{match.group(1)} is not the "
                            f"alert's own (#{name.lower()})")
        if match.group(1) not in anchors:
            problems.append(f"{group}/{name}: deploy/monitoring/README.md has no section "
                            f"#{match.group(1)}")
    return problems


def check_alert_conventions(alerts):
    problems = []
    seen = {}
    for group, rule in alert_rules(alerts):
        name = rule["alert"]
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        severity = labels.get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{group}/{name}: severity label {severity!r} is not one of "
                            f"{sorted(SEVERITIES)}")
        for key in ("summary", "description"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{group}/{name}: no {key} annotation")
        if (name, severity) in seen:
            problems.append(f"{group}/{name}: a second rule with severity {severity}")
        seen[(name, severity)] = True
        for job in re.findall(r'job\s*=~?\s*"([^"]*)"', rule.get("expr", "")):
            if job not in JOBS:
                problems.append(f"{group}/{name}: job {job!r} is not scraped by "
                                f"servicemonitor.yaml/scrape-config.yaml ({sorted(JOBS)})")
    for name, severities in sorted(REQUIRED_ALERTS.items()):
        missing = {s for s in severities if (name, s) not in seen}
        if missing:
            problems.append(f"required alert {name} with severity {sorted(missing)} is missing")
    return problems


def check_prometheus_rule(alerts):
    problems = []
    docs = load_yaml_all(PROMETHEUS_RULE)
    if len(docs) != 1:
        return [f"prometheusrule.yaml: expected one object, found {len(docs)}"]
    rule = docs[0]
    if rule.get("apiVersion") != "monitoring.coreos.com/v1" or rule.get("kind") != "PrometheusRule":
        problems.append("prometheusrule.yaml: not a monitoring.coreos.com/v1 PrometheusRule")
    if not (rule.get("metadata") or {}).get("name"):
        problems.append("prometheusrule.yaml: no metadata.name")
    if rule.get("spec") != alerts:
        problems.append("prometheusrule.yaml: spec differs from alerts.yaml; run "
                        "`python3 tests/monitoring/monitoring_test.py --write-prometheusrule`")
    return problems


def relabel_job(relabelings):
    for r in relabelings or []:
        if r.get("targetLabel") == "job" or r.get("target_label") == "job":
            return r.get("replacement")
    return None


def check_scrape_objects():
    problems = []
    docs = load_yaml_all(SERVICE_MONITOR)
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append(doc)
    monitors = by_kind.get("ServiceMonitor", [])
    pods = by_kind.get("PodMonitor", [])
    if len(monitors) != 1 or len(pods) != 1:
        return [f"servicemonitor.yaml: expected one ServiceMonitor and one PodMonitor, found "
                f"{len(monitors)} and {len(pods)}"]
    for obj, key, job in ((monitors[0], "endpoints", "certcast-server"),
                          (pods[0], "podMetricsEndpoints", "certcast-client")):
        label = f"{obj['kind']}/{obj['metadata'].get('name')}"
        if obj.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"{label}: apiVersion is not monitoring.coreos.com/v1")
        endpoints = (obj.get("spec") or {}).get(key) or []
        if len(endpoints) != 1:
            problems.append(f"{label}: expected one entry in {key}")
            continue
        endpoint = endpoints[0]
        if endpoint.get("port") != "metrics" or endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"{label}: does not scrape port `metrics` at /metrics")
        if relabel_job(endpoint.get("relabelings")) != job:
            problems.append(f"{label}: does not set job={job}")
    config = load_yaml(SCRAPE_CONFIG) or {}
    jobs = {c.get("job_name"): c for c in config.get("scrape_configs") or []}
    if set(jobs) != JOBS:
        problems.append(f"scrape-config.yaml: jobs {sorted(jobs)}, expected {sorted(JOBS)}")
    for name, job in jobs.items():
        if not job.get("kubernetes_sd_configs"):
            problems.append(f"scrape-config.yaml: job {name} has no kubernetes_sd_configs")
        keeps = [r for r in job.get("relabel_configs") or [] if r.get("action") == "keep"]
        if not any(str(r.get("regex", "")).endswith(";metrics") for r in keeps):
            problems.append(f"scrape-config.yaml: job {name} does not keep only port `metrics`")
    return problems


def check_scrape_config(promtool):
    result = run([promtool, "check", "config", SCRAPE_CONFIG])
    if result.returncode == 0:
        return []
    output = result.stdout + result.stderr
    if "kubernetes_sd_configs not found" not in output:
        return [f"promtool check config failed:\n{output}"]
    # This promtool was built without Kubernetes service discovery (Debian's is): check the
    # rest of the file with static targets in its place.
    config = load_yaml(SCRAPE_CONFIG)
    for job in config.get("scrape_configs") or []:
        job.pop("kubernetes_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{METRICS_PORT}"]}]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scrape-config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        result = run([promtool, "check", "config", path])
    if result.returncode != 0:
        return [f"promtool check config (static targets instead of Kubernetes SD) failed:\n"
                f"{result.stdout}{result.stderr}"]
    return []


def kustomize_v5():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    version = run([kubectl, "version", "--client", "-o", "json"])
    try:
        kustomize = json.loads(version.stdout).get("kustomizeVersion", "")
    except ValueError:
        return None
    major = kustomize.lstrip("v").split(".", 1)[0]
    return kubectl if major.isdigit() and int(major) >= 5 else None


def render_overlay(kubectl, tmp, name, kustomization):
    directory = os.path.join(tmp, name)
    os.makedirs(directory)
    deploy = os.path.relpath(os.path.join(ROOT, "deploy"), directory)  # kustomize wants relative
    with open(os.path.join(directory, "kustomization.yaml"), "w", encoding="utf-8") as f:
        f.write(kustomization.replace("DEPLOY", deploy))
    result = run([kubectl, "kustomize", directory])
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize ({name}) failed: {result.stderr.strip()}")
    return [o for o in yaml.safe_load_all(result.stdout) if o is not None]


def find(objects, kind, name):
    for o in objects:
        if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name:
            return o
    return None


def selects(selector, labels):
    return all((labels or {}).get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def check_metrics_container(deployment, label):
    problems = []
    containers = deployment["spec"]["template"]["spec"]["containers"]
    container = containers[0]
    if f"--metrics-listen=:{METRICS_PORT}" not in (container.get("args") or []):
        problems.append(f"{label}: container {container['name']} has no "
                        f"--metrics-listen=:{METRICS_PORT}")
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    if ports.get("metrics") != METRICS_PORT:
        problems.append(f"{label}: container {container['name']} has no port metrics "
                        f"({METRICS_PORT})")
    return problems


def check_components(kubectl):
    problems = []
    monitors = {d["kind"]: d for d in load_yaml_all(SERVICE_MONITOR)}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            server = render_overlay(kubectl, tmp, "server", (
                "resources: [DEPLOY/base]\n"
                "components: [DEPLOY/monitoring/components/server-metrics]\n"))
            tenant = render_overlay(kubectl, tmp, "tenant", (
                "namespace: tenant-x\n"
                "components: [DEPLOY/components/tenant]\n"))
        except RuntimeError as e:
            return [str(e)]
    deployment = find(server, "Deployment", "certcast-server")
    service = find(server, "Service", "certcast")
    client = find(tenant, "Deployment", "certcast-client")
    if not deployment or not service or not client:
        return ["renders lack Deployment certcast-server, Service certcast or Deployment "
                "certcast-client"]
    problems += check_metrics_container(deployment, "server-metrics")
    problems += check_metrics_container(client, "tenant component (metrics on by default)")
    ports = {p.get("name"): p for p in service["spec"].get("ports") or []}
    if (ports.get("metrics") or {}).get("port") != METRICS_PORT or \
            (ports.get("metrics") or {}).get("targetPort") != "metrics":
        problems.append(f"server-metrics: Service certcast has no port metrics {METRICS_PORT} "
                        "-> targetPort metrics")

    sm = monitors["ServiceMonitor"]["spec"]
    namespace = service["metadata"].get("namespace")
    if namespace not in ((sm.get("namespaceSelector") or {}).get("matchNames") or []):
        problems.append(f"ServiceMonitor: namespaceSelector does not include {namespace}")
    if not selects(sm["selector"], service["metadata"].get("labels")):
        problems.append("ServiceMonitor: selector does not match the labels of Service certcast")
    pm = monitors["PodMonitor"]["spec"]
    if not (pm.get("namespaceSelector") or {}).get("any"):
        problems.append("PodMonitor: namespaceSelector is not `any: true` (clients live in "
                        "every tenant namespace)")
    if not selects(pm["selector"], client["spec"]["template"]["metadata"].get("labels")):
        problems.append("PodMonitor: selector does not match the tenant client's pod labels")
    if selects(pm["selector"], deployment["spec"]["template"]["metadata"].get("labels")):
        problems.append("PodMonitor: selector also matches the server's pods")
    return problems


def dashboard_expressions(dashboard):
    """(where, expr) for every target and every query variable."""
    found = []

    def walk(panels):
        for panel in panels or []:
            for target in panel.get("targets") or []:
                found.append((f"panel {panel.get('title')!r} {target.get('refId')}",
                              target.get("expr", "")))
            walk(panel.get("panels"))

    walk(dashboard.get("panels"))
    for var in (dashboard.get("templating") or {}).get("list") or []:
        query = var.get("query")
        if var.get("type") == "query":
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            found.append((f"variable {var.get('name')}", text))
    return found


def check_dashboard(dashboard):
    problems = []
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 38:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')!r} < 38")
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list") or []}
    ds = variables.get("datasource") or {}
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource for prometheus")
    cert = variables.get("certificate") or {}
    query = cert.get("query")
    query = query.get("query") if isinstance(query, dict) else query
    if cert.get("type") != "query" or \
            re.sub(r"\s", "", str(query)) != "label_values(certcast_certificate_version,certificate)":
        problems.append("no `certificate` variable from "
                        "label_values(certcast_certificate_version, certificate)")
    if (cert.get("datasource") or {}).get("uid") != "${datasource}":
        problems.append("the `certificate` variable does not use ${datasource}")

    ids = set()

    def walk(panels):
        for panel in panels or []:
            title = panel.get("title")
            if panel.get("id") in ids:
                problems.append(f"panel {title!r}: duplicate id {panel.get('id')}")
            ids.add(panel.get("id"))
            if not isinstance(panel.get("gridPos"), dict):
                problems.append(f"panel {title!r}: no gridPos")
            if panel.get("type") == "row":
                if panel.get("targets"):
                    problems.append(f"row {title!r} has targets")
                walk(panel.get("panels"))
                continue
            if (panel.get("datasource") or {}).get("uid") != "${datasource}":
                problems.append(f"panel {title!r}: datasource is not ${{datasource}}")
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"panel {title!r}: no targets")
            for t in targets:
                if not str(t.get("expr", "")).strip():
                    problems.append(f"panel {title!r} {t.get('refId')}: empty expr")
                if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                    problems.append(f"panel {title!r} {t.get('refId')}: datasource is not "
                                    "${datasource}")
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs):
                problems.append(f"panel {title!r}: duplicate refIds {refs}")

    walk(dashboard.get("panels"))

    used = set()
    for _, expr in dashboard_expressions(dashboard):
        used |= names_in(expr)
    for name in sorted(ISSUE_METRICS - used):
        problems.append(f"issue metric {name} is not shown on any panel")
    # The panels the issue asks for, by what they must compute.
    exprs = " ".join(e for _, e in dashboard_expressions(dashboard))
    for needle in ("histogram_quantile(0.5,", "histogram_quantile(0.99,",
                   "certcast_certificate_not_after_seconds", "certcast_client_applied_version"):
        if needle not in exprs:
            problems.append(f"no panel computes {needle}")
    stats = [p for p in dashboard.get("panels") or [] if p.get("type") == "stat"]
    expiry = [p for p in stats if "certcast_certificate_not_after_seconds" in
              json.dumps(p.get("targets"))]
    steps = {s.get("value") for p in expiry for s in
             ((p.get("fieldConfig") or {}).get("defaults", {}).get("thresholds") or {}).get("steps", [])}
    if not expiry or not {3, 14} <= steps:
        problems.append("no stat panel for days until expiry with thresholds 3 and 14")
    return problems


def readme_queries():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```promql\n(.*?)```", text, re.S)


def check_expressions_parse(promtool, dashboard):
    """Dashboard expressions and README queries, checked as recording rules."""
    rules = []
    for where, expr in dashboard_expressions(dashboard):
        if where.startswith("variable"):
            continue  # label_values() is Grafana's, not PromQL
        expr = expr.replace("$__rate_interval", "5m").replace("$certificate", ".*")
        rules.append({"record": f"dashboard:expr_{len(rules)}", "expr": expr, "_where": where})
    blocks = readme_queries()
    if len(blocks) < 3:
        return [f"README.md has {len(blocks)} ```promql blocks; expected at least the three "
                "queries an operator needs most"]
    for i, block in enumerate(blocks):
        for j, query in enumerate(q.strip() for q in re.split(r"\n\s*\n", block)):
            query = "\n".join(l for l in query.splitlines() if not l.lstrip().startswith("#"))
            if query.strip():
                rules.append({"record": f"readme:query_{i}_{j}", "expr": query,
                              "_where": f"README.md promql block {i + 1}"})
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for rule in rules:  # one file per expression: promtool names the file, not the rule
            where = rule.pop("_where")
            path = os.path.join(tmp, "expr.yaml")
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump({"groups": [{"name": "check", "rules": [rule]}]}, f)
            result = run([promtool, "check", "rules", path])
            if result.returncode != 0:
                problems.append(f"{where}: {rule['expr']!r} does not parse:\n"
                                f"{(result.stdout + result.stderr).strip()}")
    return problems


def used_metric_names(alerts, dashboard):
    """name -> where it is used."""
    used = {}

    def add(text, where):
        for name in names_in(text):
            used.setdefault(name, set()).add(where)

    for rule in all_rules(alerts):
        add(rule.get("expr", ""), "alerts.yaml")
        for value in (rule.get("annotations") or {}).values():
            add(str(value), "alerts.yaml")
    for where, expr in dashboard_expressions(dashboard):
        add(expr, "dashboard.json")
    with open(README, encoding="utf-8") as f:
        add(f.read(), "README.md")
    return used


def check_names_known(used, scraped):
    problems = []
    for name, where in sorted(used.items()):
        if name not in ISSUE_METRICS and name not in scraped:
            problems.append(f"{name} (used in {', '.join(sorted(where))}) is neither in the "
                            "issue's metric list nor served by the binaries")
    return problems


# ---- the binaries ------------------------------------------------------------------------

def parse_exposition(text):
    """Samples and families of a Prometheus text exposition: ({base name: [labels]}, types)."""
    types = {}
    samples = {}
    sample_line = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
                samples.setdefault(parts[2], [])  # declared, maybe without series yet
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = sample_line.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(label.findall(m.group(2) or "")), m.group(3)
        base = name
        stripped = strip_histogram_suffix(name)
        if stripped != name and types.get(stripped) in ("histogram", "summary"):
            base = stripped
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        samples.setdefault(base, []).append((name, labels, number))
    return samples, types


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_exposition(response.read().decode("utf-8", "replace"))


def value_of(samples, name, **labels):
    """The value of the first sample of `name` (e.g. a histogram's X_count) with these labels."""
    series = samples.get(name) or samples.get(strip_histogram_suffix(name)) or []
    for sample_name, sample_labels, value in series:
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


class Process:
    def __init__(self, name, argv, log_path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def tail(self, lines=15):
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(self, patterns, deadline):
        """Waits until every regex in patterns matched the log; returns {pattern: match}."""
        while True:
            text = self.text()
            found = {p: re.search(p, text) for p in patterns}
            if all(found.values()):
                return found, None
            if self.proc.poll() is not None:
                return found, f"{self.name} exited with status {self.proc.returncode}"
            if time.monotonic() > deadline:
                return found, f"{self.name} did not log the expected lines in time"
            time.sleep(0.1)

    def stop(self):
        # The process leads its own session (start_new_session): signal its group, so that
        # children it started (hooks) end too.
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


LISTENING = r"listening on port (\d+)"
METRICS = r"metrics\b[^\n]*?\bon port (\d+)"
APPLIED = r"version 1 applied"


def start_problem(process, found, error):
    text = process.text()
    missing = [p for p, m in found.items() if not m]  # regexes of the lines not seen
    hint = ""
    if re.search(r"metrics[_-]listen", text) and re.search(r"(?i)unknown|undefined|not defined",
                                                           text):
        hint = (f"\n{process.name} does not know --metrics-listen yet: the metrics endpoint is "
                "not implemented in this build.")
    elif METRICS in missing:
        hint = (f"\n{process.name} never logged \"metrics on port N\": is --metrics-listen "
                "implemented, and does it log the port it bound?")
    return (f"{error}; missing log lines matching {missing}.{hint}\n"
            f"--- {process.name} log (tail) ---\n"
            f"{process.tail()}")


def mint_source(directory):
    """A kubelet-style Secret volume: ..TIMESTAMP/{tls.crt,tls.key}, ..data, symlinks."""
    payload = os.path.join(directory, "..2026_01_01_00_00_00.000000001")
    os.makedirs(payload)
    result = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
                  "-subj", "/CN=*.certcast.test", "-addext", "subjectAltName=DNS:*.certcast.test",
                  "-keyout", os.path.join(payload, "tls.key"),
                  "-out", os.path.join(payload, "tls.crt")])
    if result.returncode != 0:
        raise RuntimeError(f"openssl req failed: {result.stderr.strip()}")
    os.symlink(os.path.basename(payload), os.path.join(directory, "..data"))
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", os.path.join(directory, name))
    end = run(["openssl", "x509", "-noout", "-enddate", "-in", os.path.join(payload, "tls.crt")])
    not_after = end.stdout.strip().split("=", 1)[1]  # e.g. "Dec 29 00:27:43 2026 GMT"
    return calendar.timegm(time.strptime(not_after, "%b %d %H:%M:%S %Y %Z"))


def check_labels(samples, spec, who):
    problems = []
    for name, labels in spec.items():
        for sample_name, sample_labels, _ in samples.get(name, []):
            missing = labels - set(sample_labels)
            if missing:
                problems.append(f"{who}: {sample_name} has no label(s) {sorted(missing)} "
                                f"(series {sample_labels})")
                break
    return problems


def scrape_binaries(binary_dir):
    """Returns (problems, names scraped from both binaries)."""
    server_bin = os.path.join(binary_dir, "server", "certcast-server")
    client_bin = os.path.join(binary_dir, "client", "certcast-client")
    for path in (server_bin, client_bin):
        if not os.access(path, os.X_OK):
            return [f"{path} is not built (cmake --build {binary_dir})"], set()
    if shutil.which("openssl") is None:
        return ["openssl is not on PATH (Debian: openssl)"], set()

    tmp = tempfile.mkdtemp(prefix="certcast-monitoring-")
    processes = []
    try:
        source = os.path.join(tmp, "source")
        os.makedirs(source)
        not_after = mint_source(source)
        started = time.time()
        server = Process("certcast-server", [
            server_bin, "--insecure", "--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0",
            f"--certificate={CERTIFICATE}={source}", f"--state-dir={tmp}/server-state"],
            os.path.join(tmp, "server.log"))
        processes.append(server)
        found, error = server.wait_for([LISTENING, METRICS], time.monotonic() + START_DEADLINE)
        if error:
            return [start_problem(server, found, error)], set()
        grpc_port, server_metrics = found[LISTENING].group(1), found[METRICS].group(1)

        client = Process("certcast-client", [
            client_bin, "--insecure", f"--server=127.0.0.1:{grpc_port}", "--namespace=tenant-a",
            f"--certificate={CERTIFICATE}", f"--output-dir={tmp}/out",
            f"--state-dir={tmp}/client-state", "--metrics-listen=127.0.0.1:0"],
            os.path.join(tmp, "client.log"))
        processes.append(client)
        found, error = client.wait_for([METRICS, APPLIED], time.monotonic() + START_DEADLINE)
        if error:
            return [start_problem(client, found, error)], set()
        client_metrics = found[METRICS].group(1)

        # The ACK reaches the server a moment after the client logs the apply: wait until both
        # sides' metrics say so (or the deadline; the checks below then say what is missing).
        deadline = time.monotonic() + APPLY_DEADLINE
        while True:
            try:
                server_samples, _ = scrape(server_metrics)
                client_samples, _ = scrape(client_metrics)
            except (urllib.error.URLError, OSError) as e:
                return [f"scraping /metrics failed: {e}\n--- server log ---\n{server.tail()}"
                        f"\n--- client log ---\n{client.tail()}"], set()
            converged = (
                value_of(client_samples, "certcast_client_applied_version",
                         certificate=CERTIFICATE) == 1
                and value_of(server_samples, "certcast_clients_behind",
                             certificate=CERTIFICATE) == 0
                and value_of(server_samples, "certcast_clients_connected",
                             certificate=CERTIFICATE) == 1
                and (value_of(server_samples, "certcast_acks_total", certificate=CERTIFICATE)
                     or 0) >= 1)
            if converged or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        finished = time.time()

        problems = []
        scraped = set(server_samples) | set(client_samples)
        for samples, expected, spec, who in (
                (server_samples, SERVER_EXPECTED, SERVER_METRICS, "certcast-server"),
                (client_samples, CLIENT_EXPECTED, CLIENT_METRICS, "certcast-client")):
            missing = sorted(n for n in expected if not samples.get(n))  # a series, not a TYPE
            if missing:
                problems.append(f"{who} does not serve {missing} after the client applied "
                                "version 1")
            wrong_side = sorted(n for n in set(samples) & ISSUE_METRICS if n not in spec)
            if wrong_side:
                problems.append(f"{who} serves {wrong_side}, which the issue assigns to the "
                                "other binary")
            problems += check_labels(samples, spec, who)
            extra = sorted(n for n in samples if n.startswith("certcast_") and
                           n not in ISSUE_METRICS)
            if extra:
                print(f"     note: {who} also serves {extra} (not in the issue's list)")

        expect = [
            (server_samples, "certcast_certificate_version", 1, 0),
            (server_samples, "certcast_certificate_not_after_seconds", not_after, 1),
            (server_samples, "certcast_source_present", 1, 0),
            (server_samples, "certcast_certificate_pinned", 0, 0),
            (server_samples, "certcast_clients_connected", 1, 0),
            (server_samples, "certcast_clients_behind", 0, 0),
            (client_samples, "certcast_client_applied_version", 1, 0),
            (client_samples, "certcast_client_not_after_seconds", not_after, 1),
        ]
        for samples, name, want, tolerance in expect:
            if not samples.get(name):
                continue  # reported above
            got = value_of(samples, name, certificate=CERTIFICATE)
            if got is None or abs(got - want) > tolerance:
                problems.append(f"{name}{{certificate=\"{CERTIFICATE}\"}} is {got}, expected "
                                f"{want}" + (" (Unix seconds)" if "seconds" in name else ""))
        applied_at = value_of(client_samples, "certcast_client_last_apply_timestamp_seconds",
                              certificate=CERTIFICATE)
        if applied_at is not None and not started - 1 <= applied_at <= finished + 1:
            problems.append(f"certcast_client_last_apply_timestamp_seconds is {applied_at}, not "
                            f"a Unix time between {started:.0f} and {finished:.0f}")
        if "certcast_push_to_ack_seconds" in server_samples:
            count = value_of(server_samples, "certcast_push_to_ack_seconds_count",
                             certificate=CERTIFICATE)
            buckets = [s for s in server_samples["certcast_push_to_ack_seconds"]
                       if s[0].endswith("_bucket")]
            if not buckets or (count or 0) < 1:
                problems.append("certcast_push_to_ack_seconds has no _bucket series or a _count "
                                f"below 1 ({count}) after one acknowledged push")
        for samples, who in ((server_samples, "certcast-server"), (client_samples,
                                                                   "certcast-client")):
            info = samples.get("certcast_build_info", [])
            if info and not all(v == 1 and l.get("version") for _, l, v in info):
                problems.append(f"{who}: certcast_build_info is not 1 with a non-empty version")
        if problems:
            problems.append(f"--- certcast-server log (tail) ---\n{server.tail()}\n"
                            f"--- certcast-client log (tail) ---\n{client.tail()}")
        return problems, scraped
    except RuntimeError as e:
        return [str(e)], set()
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- prometheusrule.yaml -----------------------------------------------------------------

def write_prometheus_rule():
    """prometheusrule.yaml = its own header up to `spec:` + alerts.yaml from `groups:`, indented."""
    with open(PROMETHEUS_RULE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[: lines.index("spec:") + 1]
    with open(ALERTS, encoding="utf-8") as f:
        alerts = f.read().splitlines()
    body = alerts[alerts.index("groups:"):]
    text = "\n".join(header + [("  " + l) if l.strip() else "" for l in body]) + "\n"
    with open(PROMETHEUS_RULE, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(PROMETHEUS_RULE, ROOT)}")


# ---- main --------------------------------------------------------------------------------

# ctest reports a test that exits with this code as skipped (SKIP_RETURN_CODE in
# tests/CMakeLists.txt), not passed.
SKIP_EXIT = 77


def ci():
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_tool(what):
    """A tool the test needs is missing: a skip ctest reports as such, a failure under CI=true."""
    if ci():
        print(f"FAIL: {what}; with CI=true a missing tool is a failure, not a skip")
        return 1
    print(f"SKIP: {what}")
    return SKIP_EXIT


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--metrics-from", metavar="BINARY_DIR",
                        help="build directory with server/certcast-server and "
                             "client/certcast-client to scrape")
    parser.add_argument("--write-prometheusrule", action="store_true",
                        help="copy alerts.yaml's groups into prometheusrule.yaml and exit")
    args = parser.parse_args(argv[1:])

    if yaml is None and sys.executable != DEBIAN_PYTHON and os.access(DEBIAN_PYTHON, os.X_OK):
        # CMake may have found another interpreter (pyenv, a venv); python3-yaml serves Debian's.
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON] + argv)
    if args.write_prometheusrule:
        write_prometheus_rule()
        return 0
    if yaml is None:
        return missing_tool("PyYAML is not installed (Debian: apt-get install python3-yaml)")
    promtool = shutil.which("promtool")
    if promtool is None:
        return missing_tool("promtool is not on PATH (Debian: apt-get install prometheus)")

    results = Results()
    problems = check_yaml_parses()
    results.check("YAML files parse", problems)
    if problems:  # everything below reads them
        print(f"{results.passed} passed, {results.failed} failed")
        return 1
    alerts = load_yaml(ALERTS)
    try:
        with open(DASHBOARD, encoding="utf-8") as f:
            dashboard = json.load(f)
        dashboard_error = []
    except (OSError, ValueError) as e:
        dashboard, dashboard_error = {}, [f"dashboard.json: {e}"]

    results.check("promtool check rules alerts.yaml", check_promtool_rules(promtool))
    results.check("promtool test rules alerts_test.yaml", check_promtool_test(promtool))
    results.check("every alert is tested firing", check_alerts_tested(alerts))
    results.check("alerts: required, severity, summary, description",
                  check_alert_conventions(alerts))
    results.check("alerts: runbook_url of each links to its section of the runbook",
                  check_runbook_urls(alerts))
    results.check("prometheusrule.yaml spec equals alerts.yaml", check_prometheus_rule(alerts))
    results.check("ServiceMonitor, PodMonitor and scrape config jobs", check_scrape_objects())
    results.check("promtool check config scrape-config.yaml", check_scrape_config(promtool))
    kubectl = kustomize_v5()
    if kubectl:
        results.check("metrics components render and are selected", check_components(kubectl))
    elif ci():
        results.check("metrics components render (CI=true: a missing tool is a failure)",
                      ["no kubectl with kustomize v5 on PATH"])
    else:
        print("skip metrics components render (no kubectl with kustomize v5)")
    results.check("dashboard.json structure",
                  dashboard_error or check_dashboard(dashboard))
    results.check("dashboard and README queries parse",
                  dashboard_error or check_expressions_parse(promtool, dashboard))

    scraped = set()
    if args.metrics_from:
        problems, scraped = scrape_binaries(os.path.abspath(args.metrics_from))
        results.check("binaries serve the issue's metrics (scraped /metrics)", problems)
    else:
        print("skip scraping the binaries (no --metrics-from)")
    results.check("every metric name used is known",
                  check_names_known(used_metric_names(alerts, dashboard), scraped))

    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Generates tacit-dashboard.json, the Grafana dashboard of tacit-server's metrics.

    python3 deploy/grafana/generate.py            # rewrites deploy/grafana/tacit-dashboard.json
    python3 deploy/grafana/generate.py --stdout   # prints it (scripts/lint-deploy compares)

Standard library only. Edit the panels here, run it, and commit both files. The dashboard
has a `datasource` variable (any Prometheus data source) and `job` / `instance` variables
read from the server's own series; every query selects {job=~"$job",instance=~"$instance"}.
Import it in Grafana with Dashboards > New > Import.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "tacit-dashboard.json"

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = '{job=~"$job",instance=~"$instance"}'


def m(name: str) -> str:
    """A metric with the dashboard's job and instance selection."""
    return name + SEL


def rate(name: str) -> str:
    return f"rate({m(name)}[$__rate_interval])"


def target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


def targets(*pairs: tuple) -> list:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def thresholds(*steps: tuple) -> dict:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def stat(title: str, description: str, expr: str, legend: str, unit: str = "none",
         steps: tuple = ((None, "green"),), mappings: list | None = None,
         decimals: int | None = None) -> dict:
    defaults = {
        "unit": unit,
        "thresholds": thresholds(*steps),
        "mappings": mappings or [],
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets((expr, legend)),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
    }


def timeseries(title: str, description: str, *pairs: tuple, unit: str = "short",
               min_value: float | None = 0, max_value: float | None = None,
               stack: bool = False) -> dict:
    defaults = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
        "thresholds": thresholds((None, "green")),
    }
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets(*pairs),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


READY_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "NOT READY", "color": "red", "index": 0},
            "1": {"text": "READY", "color": "green", "index": 1},
        },
    }
]
FAILING_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "OK", "color": "green", "index": 0},
            "1": {"text": "FAILING", "color": "red", "index": 1},
        },
    }
]

STATS = [
    stat("Ready", "/readyz: the database answers, writes succeed, not shutting down "
         "(tacit_ready).", m("tacit_ready"), "{{instance}}",
         steps=((None, "red"), (1, "green")), mappings=READY_MAPPINGS),
    stat("Writes failing", "1 while the group-commit writer cannot write "
         "(tacit_writes_failing).", m("tacit_writes_failing"), "{{instance}}",
         steps=((None, "green"), (1, "red")), mappings=FAILING_MAPPINGS),
    stat("TLS certificate: days left", "Days until the loaded certificate's notAfter. "
         "No data when the server runs in plain HTTP behind a proxy (the proxy's "
         "certificate is not measured here).",
         f"({m('tacit_tls_certificate_expiry_timestamp_seconds')} - time()) / 86400",
         "{{instance}}", unit="d", decimals=0,
         steps=((None, "red"), (0, "orange"), (14, "green"))),
    stat("Uptime", "Time since the process started.",
         f"time() - {m('process_start_time_seconds')}", "{{instance}}", unit="s",
         decimals=0),
]

SERIES = [
    timeseries("HTTP requests by status", "Requests per second by status code "
               "(every route; WebSocket upgrades count once).",
               (f"sum by (status) ({rate('tacit_http_requests_total')})", "{{status}}"),
               unit="reqps", stack=True),
    timeseries("Latency p50 by route", "Median request duration by route template.",
               ("histogram_quantile(0.5, sum by (route, le) "
                f"({rate('tacit_http_request_duration_seconds_bucket')}))", "{{route}}"),
               unit="s"),
    timeseries("Latency p99 by route", "99th percentile request duration by route "
               "template (the histogram's buckets end at 2.5 s).",
               ("histogram_quantile(0.99, sum by (route, le) "
                f"({rate('tacit_http_request_duration_seconds_bucket')}))", "{{route}}"),
               unit="s"),
    timeseries("Envelopes", "Envelopes accepted (stored), pushed over WebSockets and "
               "acknowledged, per second.",
               (f"sum({rate('tacit_envelopes_accepted_total')})", "accepted"),
               (f"sum({rate('tacit_envelopes_pushed_total')})", "pushed"),
               (f"sum({rate('tacit_envelopes_acked_total')})", "acked"),
               unit="ops"),
    timeseries("Envelopes waiting", "Envelopes in all mailboxes, waiting to be "
               "acknowledged (tacit_mailbox_envelopes).",
               (m("tacit_mailbox_envelopes"), "{{instance}}")),
    timeseries("Deepest mailbox vs limit", "The deepest device mailbox against "
               "limits.max_mailbox_depth; at the limit, sends to it get 507 mailbox_full.",
               (m("tacit_mailbox_depth_max"), "deepest {{instance}}"),
               (m("tacit_mailbox_depth_limit"), "limit {{instance}}")),
    timeseries("Connections and WebSockets", "Open client connections (WebSockets "
               "included) against http.max_connections as lowered at start, and open "
               "WebSockets.",
               (m("tacit_connections_open"), "open {{instance}}"),
               (m("tacit_connections_max"), "max {{instance}}"),
               (m("tacit_websockets_open"), "websockets {{instance}}")),
    timeseries("Connections refused", "Connections refused per second at "
               "http.max_connections (503).",
               (f"sum by (instance) ({rate('tacit_connections_refused_total')})",
                "{{instance}}"),
               unit="cps"),
    timeseries("One-time prekeys in stock", "One-time prekeys held on the server for "
               "all devices, by kind.",
               (f"sum by (kind) ({m('tacit_one_time_prekeys')})", "{{kind}}")),
    timeseries("Devices low on one-time prekeys", "Devices low on one-time prekeys, by "
               "kind, and all devices.",
               (f"sum by (kind) ({m('tacit_devices_low_one_time_prekeys')})", "low {{kind}}"),
               (f"sum({m('tacit_devices')})", "devices")),
    timeseries("Disk free", "Free space of the file systems holding the data directory "
               "and the blob directory.",
               (f"100 * {m('tacit_filesystem_available_bytes')} / "
                f"{m('tacit_filesystem_size_bytes')}", "{{dir}} {{instance}}"),
               unit="percent", max_value=100),
    timeseries("CPU", "CPU time used per second (1 = one core).",
               (rate("process_cpu_seconds_total"), "{{instance}}"),
               unit="percentunit"),
    timeseries("Memory (RSS)", "Resident memory of the process.",
               (m("process_resident_memory_bytes"), "{{instance}}"),
               unit="bytes"),
    timeseries("File descriptors", "Open file descriptors against the limit.",
               (m("process_open_fds"), "open {{instance}}"),
               (m("process_max_fds"), "max {{instance}}")),
    timeseries("Authentication failures", "Failed authentications and requests "
               "refused 429 by the per-source limit, per second.",
               (f"sum by (instance) ({rate('tacit_auth_failures_total')})",
                "failures {{instance}}"),
               (f"sum by (instance) ({rate('tacit_auth_rate_limited_total')})",
                "rate-limited {{instance}}"),
               unit="reqps"),
    timeseries("Group commit", "Write transactions and failed writes per second, and "
               "operations per transaction.",
               (f"sum by (instance) ({rate('tacit_write_batches_total')})",
                "batches {{instance}}"),
               (f"sum by (instance) ({rate('tacit_write_failures_total')})",
                "failures {{instance}}"),
               (f"sum by (instance) ({rate('tacit_write_batch_operations_total')}) / "
                f"sum by (instance) ({rate('tacit_write_batches_total')})",
                "operations per batch {{instance}}")),
]


def layout() -> list:
    panels = []
    for i, p in enumerate(STATS):
        panels.append({"id": len(panels) + 1, "gridPos": {"h": 4, "w": 6, "x": 6 * i, "y": 0}, **p})
    for i, p in enumerate(SERIES):
        grid = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 4 + 8 * (i // 2)}
        panels.append({"id": len(panels) + 1, "gridPos": grid, **p})
    return panels


def variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"PrometheusVariableQueryEditor-{name}"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
    }


def dashboard() -> dict:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "tacit-server: readiness, requests, delivery, mailboxes, "
                       "connections, prekeys, certificate, disk and process "
                       "(deploy/grafana/generate.py).",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": layout(),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["tacit"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                variable("job", "Job", "label_values(tacit_connections_open, job)"),
                variable("instance", "Instance",
                         'label_values(tacit_connections_open{job=~"$job"}, instance)'),
            ]
        },
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "Tacit relay server",
        "uid": "tacit-server",
        "version": 1,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> None:
    text = render()
    if sys.argv[1:] == ["--stdout"]:
        sys.stdout.write(text)
    elif not sys.argv[1:]:
        OUT.write_text(text)
        print(f"wrote {OUT}")
    else:
        sys.exit("usage: generate.py [--stdout]")


if __name__ == "__main__":
    main()

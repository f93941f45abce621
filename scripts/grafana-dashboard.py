#!/usr/bin/env python3
"""Writes contrib/grafana/myco.json, the Grafana dashboard of a Myco mesh.

The panels are listed here once, as (title, unit, queries), so that adding a
panel is one line; run this after a change and commit both files.
Queries use $node (the scrape instance) and $job (the myco_job label)."""
import json, os

DS = {"type": "prometheus", "uid": "${datasource}"}
N = 'instance=~"$node"'
J = 'myco_job=~"$job"'
RATE = "$__rate_interval"

ROWS = [
    ("Mesh", [
        ("Members by state", "short", [f'max by (state) (myco_members{{{N}}})']),
        ("Connected to the mesh", "short", [f'myco_connected{{{N}}}']),
        ("Datagrams per second", "pps", [f'sum by (instance) (rate(myco_datagrams_in_total{{{N}}}[{RATE}]))',
                                        f'sum by (instance) (rate(myco_datagrams_out_total{{{N}}}[{RATE}]))']),
        ("Gossip bytes per second", "Bps", [f'sum by (instance) (rate(myco_bytes_in_total{{{N}}}[{RATE}]))',
                                           f'sum by (instance) (rate(myco_bytes_out_total{{{N}}}[{RATE}]))']),
    ]),
    ("State", [
        ("Changes written per second", "ops", [f'sum by (instance) (rate(myco_store_changes_written_total{{{N}}}[{RATE}]))']),
        ("Replication bytes sent per second", "Bps", [f'sum by (instance) (rate(myco_stream_bytes_sent_total{{{N}}}[{RATE}]))']),
        ("Replicated bytes held", "bytes", [f'myco_state_bytes{{{N}}}', f'myco_state_entries{{{N}}}']),
        ("Clock lead", "s", [f'myco_state_clock_lead_seconds{{{N}}}']),
        ("Store fsyncs per second", "ops", [f'sum by (instance) (rate(myco_store_fsyncs_total{{{N}}}[{RATE}]))']),
    ]),
    ("Jobs", [
        ("Desired vs ready", "short", ['max by (myco_job) (myco_job_desired_instances{myco_job=~"$job"})',
                                      'max by (myco_job) (myco_job_ready_instances{myco_job=~"$job"})']),
        ("Instances on each node by state", "short", [f'sum by (instance, state) (myco_instances{{{N}}})']),
        ("Instance restarts", "short", ['max by (myco_job) (myco_job_instance_restarts{myco_job=~"$job"})']),
        ("Job versions", "short", ['max by (myco_job) (myco_job_version{myco_job=~"$job"})']),
        ("Spawns per second", "ops", [f'sum by (instance) (rate(myco_instance_spawns_total{{{N}}}[{RATE}]))']),
    ]),
    ("Edge", [
        ("Edge requests per second by job", "reqps", [f'sum by (myco_job) (rate(myco_edge_requests_total{{{N},{J}}}[{RATE}]))']),
        ("Edge errors per second by job", "reqps", [f'sum by (myco_job) (rate(myco_edge_responses_total{{{N},{J},class="5xx"}}[{RATE}]))',
                                                    f'sum by (myco_job, kind) (rate(myco_edge_upstream_errors_total{{{N},{J}}}[{RATE}]))']),
        ("Edge latency p50 / p99 by job", "s", [f'histogram_quantile(0.5, sum by (myco_job, le) (rate(myco_edge_request_duration_seconds_bucket{{{N},{J}}}[{RATE}])))',
                                               f'histogram_quantile(0.99, sum by (myco_job, le) (rate(myco_edge_request_duration_seconds_bucket{{{N},{J}}}[{RATE}])))']),
        ("Edge requests in flight", "short", [f'sum by (myco_job) (myco_edge_in_flight{{{N},{J}}})']),
        ("Edge retries and ejections per second", "ops", [f'sum by (myco_job) (rate(myco_edge_retries_total{{{N},{J}}}[{RATE}]))',
                                                          f'sum by (myco_job) (rate(myco_edge_ejections_total{{{N},{J}}}[{RATE}]))']),
    ]),
    ("Agent", [
        ("Resident memory", "bytes", [f'myco_process_resident_memory_bytes{{{N}}}']),
        ("CPU", "percentunit", [f'rate(myco_process_cpu_seconds{{{N}}}[{RATE}])']),
        ("Open files", "short", [f'myco_process_open_fds{{{N}}}']),
        ("Data dir free", "bytes", [f'myco_data_dir_filesystem_free_bytes{{{N}}}']),
        ("API connections open", "short", [f'myco_http_connections_open{{{N}}}']),
    ]),
]


def dashboard():
    panels, pid, y = [], 1, 0
    for row, items in ROWS:
        panels.append({"type": "row", "title": row, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, unit, exprs) in enumerate(items):
            panels.append({
                "type": "timeseries", "title": title, "id": pid, "datasource": DS,
                "gridPos": {"h": 7, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 7},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [{"refId": chr(65 + k), "datasource": DS, "expr": e,
                             "legendFormat": "__auto"} for k, e in enumerate(exprs)],
            })
            pid += 1
        y += ((len(items) + 2) // 3) * 7
    var = lambda name, label, query: {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": name}, "definition": query,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}
    return {
        "title": "Myco mesh", "uid": "myco-mesh", "tags": ["myco"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            var("node", "Node", "label_values(myco_build_info, instance)"),
            var("job", "Job", "label_values(myco_job_desired_instances, myco_job)"),
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with open(os.path.join(root, "contrib", "grafana", "myco.json"), "w") as f:
        json.dump(dashboard(), f, indent=1)
        f.write("\n")

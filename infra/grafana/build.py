"""Writes the Grafana dashboards in this folder from the panel lists below (run it after
editing them): ``python infra/grafana/build.py``. Every query is checked against a real
Prometheus by tests/test_prometheus_e2e.py, so no panel is dead."""

from __future__ import annotations

import json
from pathlib import Path

RATE = "$__rate_interval"

SERVING = [
    (
        "Requests/s by route and status",
        f"sum by (route, status) (rate(ray_genai_requests_total[{RATE}]))",
        "{{route}} {{status}}",
    ),
    ("Requests/s by API key", f"sum by (key) (rate(ray_genai_requests_total[{RATE}]))", "{{key}}"),
    (
        "5xx ratio",
        f'(sum(rate(ray_genai_requests_total{{status=~"5.."}}[{RATE}])) or vector(0))'
        f" / sum(rate(ray_genai_requests_total[{RATE}]))",
        "5xx",
    ),
    (
        "Latency p50 (s)",
        f"histogram_quantile(0.5, sum by (le, route) (rate(ray_genai_request_latency_s_bucket[{RATE}])))",
        "{{route}}",
    ),
    (
        "Latency p99 (s)",
        f"histogram_quantile(0.99, sum by (le, route) (rate(ray_genai_request_latency_s_bucket[{RATE}])))",
        "{{route}}",
    ),
    (
        "Tokens/s",
        f"sum by (model, kind) (rate(ray_genai_tokens_total[{RATE}]))",
        "{{model}} {{kind}}",
    ),
    ("Tokens/s by API key", f"sum by (key) (rate(ray_genai_tokens_total[{RATE}]))", "{{key}}"),
    (
        "Images/s",
        f"sum by (model, route) (rate(ray_genai_images_total[{RATE}]))",
        "{{model}} {{route}}",
    ),
    (
        "Decode batch size p50",
        f"histogram_quantile(0.5, sum by (le, model) (rate(ray_genai_decode_batch_size_bucket[{RATE}])))",
        "{{model}}",
    ),
    ("Active sequences", "sum by (model) (ray_genai_decode_active)", "{{model}}"),
    ("Queue depth", "sum by (model) (ray_genai_decode_queued)", "{{model}}"),
    (
        "Replicas",
        'max by (application) (ray_serve_deployment_replica_healthy{deployment="models"})',
        "{{application}}",
    ),
    ("Checkpoint step served", "max by (model) (ray_genai_model_step)", "{{model}}"),
    (
        "Checkpoint swaps",
        "sum by (model, result) (ray_genai_checkpoint_swaps_total)",
        "{{model}} {{result}}",
    ),
]

TRAINING = [
    ("Step", "max by (run) (ray_genai_train_step)", "{{run}}"),
    ("Loss", "max by (run, name) (ray_genai_train_loss)", "{{run}} {{name}}"),
    ("Learning rate", "max by (run) (ray_genai_train_learning_rate)", "{{run}}"),
    (
        "Throughput (tokens or images/s)",
        "max by (run, unit) (ray_genai_train_items_per_second)",
        "{{run}} {{unit}}",
    ),
    ("Held-out metrics", "max by (run, name) (ray_genai_train_eval)", "{{run}} {{name}}"),
]


def dashboard(uid: str, title: str, panels: list[tuple[str, str, str]]) -> dict:
    source = {"type": "prometheus", "uid": "${datasource}"}
    return {
        "uid": uid,
        "title": title,
        "tags": ["genai"],
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]
        },
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": name,
                "datasource": source,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "targets": [
                    {"refId": "A", "datasource": source, "expr": expr, "legendFormat": legend}
                ],
            }
            for i, (name, expr, legend) in enumerate(panels)
        ],
    }


if __name__ == "__main__":
    here = Path(__file__).parent
    for uid, title, panels in (
        ("genai-serving", "genai serving", SERVING),
        ("genai-training", "genai training", TRAINING),
    ):
        (here / f"{uid.split('-')[1]}.json").write_text(
            json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        )

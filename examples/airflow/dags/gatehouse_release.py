"""train → evaluate → approval gate (canary / full / hold) → the chosen deploy.

A failing task sends `step.failed` to Gatehouse (GatehouseNotifier); the approval gate waits in
Airflow's triggerer, not in a worker, until someone picks an option in the browser, in chat, with
the CLI or through the API. Where the "deployment" goes: $RELEASE_OUT (default /tmp/gatehouse-release).
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from gatehouse.airflow import GatehouseGateOperator, GatehouseNotifier

OUT = Path(os.environ.get("RELEASE_OUT", "/tmp/gatehouse-release"))

with DAG(
    "gatehouse_release",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"on_failure_callback": GatehouseNotifier(), "retries": 0},
    tags=["gatehouse"],
) as dag:

    @task
    def train() -> dict:
        return {"model": "fraud-model", "version": 7}

    @task
    def evaluate(model: dict) -> dict:
        accuracy = float(os.environ.get("RELEASE_ACCURACY", "0.93"))
        if accuracy < 0.9:
            raise ValueError(f"accuracy {accuracy} is below 0.90")
        return {**model, "accuracy": accuracy}

    approve = GatehouseGateOperator(
        task_id="approve",
        title="Deploy {{ ti.xcom_pull(task_ids='evaluate')['model'] }} v{{ ti.xcom_pull(task_ids='evaluate')['version'] }}?",
        details="Accuracy **{{ ti.xcom_pull(task_ids='evaluate')['accuracy'] }}** on the holdout set.",
        choices=["canary", "full", "hold"],
        branches={"canary": "deploy_canary", "full": "deploy_full", "hold": "hold"},
        inputs=[{"name": "traffic_percent", "type": "integer", "min": 1, "max": 100, "default": 10}],
        timeout="2h",
        on_timeout="expire",
    )

    def record(how: str, traffic: int | None) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "deployed.json").write_text(json.dumps({"how": how, "traffic_percent": traffic}))

    @task
    def deploy_canary(ti=None) -> None:
        # The gate task returns the choice; its XCom "gate" has the decided inputs.
        choice = ti.xcom_pull(task_ids="approve")
        gate = ti.xcom_pull(task_ids="approve", key="gate")
        record(choice, gate["inputs"].get("traffic_percent"))

    @task
    def deploy_full() -> None:
        record("full", 100)

    @task
    def hold() -> None:
        record("hold", None)

    evaluate(train()) >> approve >> [deploy_canary(), deploy_full(), hold()]

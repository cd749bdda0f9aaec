"""The Airflow operator and notifier inside a real Airflow 3 (`airflow dags test`, a metadata
database of its own in a temp dir) against a real `gatehouse serve`, on the example DAG of
examples/airflow: a gate that defers and is released by a decision made through the API — across
a kill -9 of the server while the task is deferred —, a canceled gate that fails its task, and a
failing task whose notifier's event arrives. Runs in the Airflow venv (make test makes it);
skipped where Airflow is not installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("airflow")

from gatehouse import Client  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
DAGS = ROOT / "examples" / "airflow" / "dags"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "gatehouse_release"


@pytest.fixture(scope="module")
def airflow_home():
    """One metadata database for the module: `airflow db migrate` once (about 5 s)."""
    with tempfile.TemporaryDirectory(prefix="gatehouse-airflow-") as home:
        env = airflow_env(home, "http://127.0.0.1:9", os.path.join(home, "out"))
        done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        yield home


def airflow_env(home: str, server_url: str, out: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GATEHOUSE_"))}
    env.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "GATEHOUSE_URL": server_url, "RELEASE_OUT": out, **extra})
    return env


def dags_test(home: str, server_url: str, out: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([AIRFLOW, "dags", "test", DAG_ID], env=airflow_env(home, server_url, out, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def pending_gate(server, run: subprocess.Popen[str]) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        gates = httpx.get(f"{server.url}/v1/gates", params={"pipeline": DAG_ID, "state": "pending"}).json()["gates"]
        if gates:
            return gates[0]
        time.sleep(0.3)
    output = run.stdout.read() if run.poll() is not None and run.stdout else ""
    raise AssertionError(f"no gate opened by the DAG; airflow said:\n{output[-4000:]}")


def finish(run: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = run.communicate(timeout=180)
    return run.returncode, output


def test_a_deferred_gate_is_released_by_a_decision_across_a_server_restart(server, airflow_home):
    out = os.path.join(airflow_home, "out-approved")
    run = dags_test(airflow_home, server.url, out)
    gate = pending_gate(server, run)
    assert gate["pipeline"] == DAG_ID and gate["step"] == "approve"
    assert gate["key"] == f"{DAG_ID}/{gate['run']}/approve"
    assert gate["title"] == "Deploy fraud-model v7?"  # rendered from the upstream XCom
    assert gate["choices"] == ["canary", "full", "hold"]

    # The task is deferred: its trigger long-polls /wait. The server dies and comes back; the
    # trigger reconnects, and the decision still releases it.
    time.sleep(1)
    server.restart()
    with Client(server.url) as gh:
        gh.decide(gate["id"], "canary", by="web:alice", inputs={"traffic_percent": 25})
    code, output = finish(run)
    assert code == 0, output[-4000:]
    assert json.loads(Path(out, "deployed.json").read_text()) == {"how": "canary", "traffic_percent": 25}
    assert "tasks_skipped=2" in output  # deploy_full and hold, by the branch


def test_a_canceled_gate_fails_its_task_and_the_notifier_reports_it(server, airflow_home):
    out = os.path.join(airflow_home, "out-canceled")
    run = dags_test(airflow_home, server.url, out)
    gate = pending_gate(server, run)
    with Client(server.url) as gh:
        gh.cancel(gate["id"], comment="wrong model")
    code, output = finish(run)
    assert code != 0
    assert not Path(out, "deployed.json").exists()
    events = httpx.get(f"{server.url}/v1/events", params={"type": "step.failed", "pipeline": DAG_ID}).json()["events"]
    assert [e["step"] for e in events] == ["approve"], output[-4000:]
    failed = events[0]
    assert failed["run"] == gate["run"] and failed["severity"] == "error"
    assert failed["attributes"]["exception_type"] == "AirflowFailException"
    assert "canceled" in failed["summary"] and "wrong model" in failed["attributes"]["message"]


def test_a_failing_task_sends_its_exception_and_no_gate_opens(server, airflow_home):
    out = os.path.join(airflow_home, "out-failed")
    code, output = finish(dags_test(airflow_home, server.url, out, RELEASE_ACCURACY="0.5"))
    assert code != 0
    events = httpx.get(f"{server.url}/v1/events", params={"type": "step.failed"}).json()["events"]
    assert len(events) == 1, output[-4000:]
    failed = events[0]
    assert failed["pipeline"] == DAG_ID and failed["step"] == "evaluate"
    assert failed["id"].startswith("airflow-")
    assert failed["summary"] == f"{DAG_ID}.evaluate failed: ValueError: accuracy 0.5 is below 0.90"
    attributes = failed["attributes"]
    assert attributes["exception_type"] == "ValueError" and attributes["try_number"] == 1
    assert "in evaluate" in attributes["traceback"] and attributes["traceback"].rstrip().endswith("below 0.90")
    assert "tasks/evaluate" in failed["url"]
    assert httpx.get(f"{server.url}/v1/gates").json()["gates"] == []

"""The Gatehouse flavors inside a real ZenML 0.98 (offline, a config of its own), registered
from the installed package: a stack with the alerter runs a pipeline whose step asks and is
approved through the API, hooks sending step events; then the annotator on the same stack
answers every BaseAnnotator method over a dataset labelled through the API. Runs in the ZenML venv (make test
makes it); skipped where ZenML is not installed."""
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

pytest.importorskip("zenml")

from gatehouse import Client, GatehouseError  # noqa: E402

HERE = Path(__file__).resolve().parent
ZENML = str(Path(sys.executable).parent / "zenml")


def zenml_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZENML_", "GATEHOUSE_"))}
    env.update({"ZENML_CONFIG_PATH": os.path.join(home, "config"), "ZENML_ANALYTICS_OPT_IN": "false",
                "ZENML_LOGGING_VERBOSITY": "WARN", "ZENML_ENABLE_RICH_TRACEBACK": "false",
                "AUTO_OPEN_DASHBOARD": "false"})
    return env


def zenml(args: list[str], cwd: str, env: dict[str, str]) -> str:
    done = subprocess.run([ZENML, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"zenml {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_zenml_step_asks_and_is_released_by_a_decision(server):
    with tempfile.TemporaryDirectory(prefix="gatehouse-zenml-") as home:
        project = os.path.join(home, "project")
        os.mkdir(project)
        for script in ("pipeline.py", "annotate.py"):
            (Path(project) / script).write_text((HERE / "zenml_project" / script).read_text())
        env = zenml_env(home)
        zenml(["init"], project, env)
        zenml(["alerter", "flavor", "register", "gatehouse.zenml.GatehouseAlerterFlavor"], project, env)
        zenml(["alerter", "register", "gh", "--flavor", "gatehouse", f"--server_url={server.url}"], project, env)
        zenml(["stack", "register", "gated", "-o", "default", "-a", "default", "-al", "gh", "--set"], project, env)

        run = subprocess.Popen([sys.executable, "pipeline.py"], cwd=project, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            with Client(server.url) as gh:
                deadline = time.monotonic() + 120
                gates = []
                while not gates and time.monotonic() < deadline and run.poll() is None:
                    gates = httpx.get(f"{server.url}/v1/gates", params={"pipeline": "gated_flow"}).json()["gates"]
                    time.sleep(0.1)
                assert gates, f"no gate opened: {run.stdout.read() if run.poll() is not None else ''}"
                gate = gates[0]
                assert gate["title"] == "Deploy the model?" and gate["step"] == "approve_step"
                assert gate["key"] == f"{gate['run']}/approve_step" and gate["approvers"] == ["web:alice"]
                assert gate["timeout"] == "10m" and gate["attributes"]["run_name"].startswith("gated_flow")
                gh.decide(gate["id"], "approve", by="web:alice")
                decided = time.time()
                second = []
                while not second and time.monotonic() < deadline and run.poll() is None:
                    second = [g for g in httpx.get(f"{server.url}/v1/gates", params={"pipeline": "gated_flow", "state": "pending"}).json()["gates"]]
                    time.sleep(0.1)
                assert second and second[0]["id"] != gate["id"] and second[0]["key"] == gate["key"]
                assert second[0]["title"] == "Also promote it to prod?" and "24 hours" in second[0]["details"]
                gh.decide(second[0]["id"], "reject", by="web:alice")
            output, _ = run.communicate(timeout=120)
        finally:
            run.kill()
        asked = [line for line in output.splitlines() if line.startswith("ASKED ")]
        assert asked and asked[0].split()[1] == "True", output
        print(f"\nZenML ask(): decision 2xx → ask() returned in {(float(asked[0].split()[2]) - decided) * 1000:+.1f} ms")
        assert "PIPELINE FAILED" in output and "PROMOTED False" in output, output

        events = httpx.get(f"{server.url}/v1/events", params={"pipeline": "gated_flow"}).json()["events"]
        by_type = {e["type"]: e for e in events}
        report = [e for e in events if e["type"] == "zenml.message"]
        assert report and report[0]["summary"] == "*Step report*" and "Accuracy: 0.93" in report[0]["details"]
        assert by_type["model.trained"]["summary"] == "training finished" and by_type["model.trained"]["labels"]["team"] == "ml"
        assert by_type["step.succeeded"]["step"] == "approve_step"
        failed = by_type["step.failed"]
        assert failed["step"] == "deploy_step" and failed["run"] == gate["run"]
        assert failed["attributes"]["exception_type"] == "ValueError"
        assert "deploy broke (approved=True)" in failed["attributes"]["traceback"]
        assert by_type["gate.approved"]["attributes"]["gate_key"] == gate["key"]

        # The annotator flavor on the same stack: every BaseAnnotator method over a dataset.
        zenml(["annotator", "flavor", "register", "gatehouse.zenml.GatehouseAnnotatorFlavor"], project, env)
        zenml(["annotator", "register", "ann", "--flavor", "gatehouse", f"--server_url={server.url}"], project, env)
        zenml(["stack", "update", "gated", "-an", "ann"], project, env)

        def annotate(step: str) -> list[dict]:
            done = subprocess.run([sys.executable, "annotate.py", step], cwd=project, env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

        assert annotate("create") == [{"created": "reviews"}]
        with Client(server.url) as gh:
            gh.add_items("reviews", [{"id": "i1", "data": {"text": "great"}}, {"id": "i2", "data": {"text": "awful"}}])
            gh.label("reviews", "i1", "pos", annotator="web:ann")
        read, after = annotate("read")
        assert read["url"] == f"{server.url}/inbox" and read["dataset_url"].endswith("/annotate/reviews")
        assert read["names"] == ["reviews"] and read["datasets"][0]["instructions"] == "Tone?"
        assert read["stats"] == [1, 1] and read["dataset"]["items"] == 2
        assert [(i["id"], i["label"]) for i in read["labeled"]] == [("i1", "pos")]
        assert read["labeled"][0]["labels"][0]["annotator"] == "web:ann"
        assert [i["id"] for i in read["unlabeled"]] == ["i2"]
        assert read["launched"] == read["dataset_url"]
        assert after == {"after_delete": []}

        # examples/zenml on the same stack: people label the sample and approve; it deploys.
        run_the_example(project, env, server.url)


def run_the_example(project: str, env: dict[str, str], url: str) -> None:
    # ZenML resolves steps from files under its repository root (`zenml init`'s directory), as
    # the example's README has it run from the repository's root.
    example = Path(project) / "review_pipeline.py"
    example.write_text((HERE.parents[2] / "examples" / "zenml" / "pipeline.py").read_text())
    run = subprocess.Popen([sys.executable, str(example)], cwd=project, env={**env, "EXAMPLE_GATE_TIMEOUT": "600"},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with Client(url) as gh:
            deadline = time.monotonic() + 180
            ready = False
            while not ready and time.monotonic() < deadline and run.poll() is None:
                try:
                    ready = gh.get_dataset("churn-reviews")["items"] == 5
                except GatehouseError:
                    time.sleep(0.2)
            assert ready, run.stdout.read() if run.poll() is not None else "the example queued no items"
            for rid, label in [("r1", "pos"), ("r2", "neg"), ("r3", "pos"), ("r4", "neg"), ("r5", "pos")]:
                gh.label("churn-reviews", rid, label, annotator="web:reviewer")
            gate = None
            while gate is None and time.monotonic() < deadline and run.poll() is None:
                found = httpx.get(f"{url}/v1/gates", params={"pipeline": "review_model", "state": "pending"}).json()["gates"]
                gate = found[0] if found else None
                time.sleep(0.2)
            assert gate is not None, run.stdout.read() if run.poll() is not None else "no gate"
            # The length model gets all five right against people's labels.
            assert "against people's labels 1.00" in gate["title"], gate["title"]
            gh.decide(gate["id"], "approve", by="web:lead")
        output, _ = run.communicate(timeout=180)
    finally:
        run.kill()
    assert run.returncode == 0 and "DEPLOYED" in output, output
    types = [e["type"] for e in httpx.get(f"{url}/v1/events", params={"pipeline": "review_model"}).json()["events"]]
    assert "model.evaluated" in types and "gate.approved" in types and types[-1] == "model.deployed", types

"""Screenshots of the console for the README (docs/screenshots/): a real server with a little
seeded state, Debian's Chromium at a laptop's width and at a phone's. Not part of make test:

    GATEHOUSE_BINARY=.build/debug/gatehouse .venv/bin/python tests/browser/screenshots.py
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))
spec = importlib.util.spec_from_file_location("client_conftest", ROOT / "clients" / "python" / "tests" / "conftest.py")
client_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(client_conftest)

from gatehouse import Client  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        server = client_conftest.Server(workdir)
        try:
            with Client(server.url) as gh:
                for i, (status, step) in enumerate([("succeeded", None), ("failed", "fit"), ("running", None), ("failed", "evaluate")]):
                    run = f"r{40 + i}"
                    gh.emit("run.started", "fraud-model", run=run)
                    if step:
                        gh.emit("step.failed", "fraud-model", run=run, step=step, summary=f"{step}: CUDA out of memory")
                    if status != "running":
                        gh.emit(f"run.{status}", "fraud-model", run=run, step=step, summary=f"run {status}")
                gate = gh.open_gate("Deploy fraud-model v7?", pipeline="fraud-model", run="r40", approvers=["web:alice"],
                                    details="## Results\n**AUC** 0.91 on the holdout set, up from 0.88.",
                                    subject={"digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
                                    choices=["canary", "full", "reject"], timeout="2h",
                                    inputs=[{"name": "traffic_percent", "type": "integer", "min": 1, "max": 100, "default": 10}])
                gh.create_dataset("ner", task="spans", labels=["PLACE", "PERSON"])
                gh.add_items("ner", [{"id": "a", "data": {"text": "Ada Lovelace lived in London.\r\nShe wrote the first program."}}])
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
                for name, width, height in [("laptop", 1100, 700), ("phone", 390, 844)]:
                    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
                    page.goto(server.url + "/login?next=/")
                    page.fill("#name", "alice")
                    page.click("button[type=submit]")
                    page.wait_for_selector("h1")
                    page.screenshot(path=str(OUT / f"runs-{name}.png"))
                    page.goto(gate.url)
                    page.screenshot(path=str(OUT / f"gate-{name}.png"), full_page=name == "laptop")
                    if name == "laptop":
                        page.goto(server.url + "/annotate/ner")
                        page.fill("#spans", "0-12:PERSON, 22-28:PLACE")
                        page.dispatch_event("#spans", "input")
                        page.screenshot(path=str(OUT / "annotate-laptop.png"))
                        for path, shot in [("/events", "events"), ("/runs/r43?pipeline=fraud-model", "run"), ("/gates", "gates"),
                                           ("/deliveries", "deliveries"), ("/silences?pipeline=fraud-model&type=run.failed", "silences"),
                                           ("/datasets", "datasets"), ("/inbox", "inbox")]:
                            page.goto(server.url + path)
                            page.screenshot(path=str(OUT / f"{shot}-laptop.png"))
                browser.close()
        finally:
            server.kill()
    print("\n".join(str(p.relative_to(ROOT)) for p in sorted(OUT.glob("*.png"))))


if __name__ == "__main__":
    main()

"""Chromium (Debian's, driven by Playwright) against a real `gatehouse serve`.

The server fixture is the Python client's (clients/python/tests/conftest.py), loaded by path:
one way to start the binary for every Python-driven test."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("client_conftest", ROOT / "clients" / "python" / "tests" / "conftest.py")
_client_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_client_conftest)
server = _client_conftest.server  # noqa: F401  (a pytest fixture, re-exported)

playwright_api = pytest.importorskip("playwright.sync_api")


def chromium_path() -> str | None:
    given = os.environ.get("CHROMIUM")
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if not path:
        pytest.skip("no chromium (make test installs Debian's)")
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    p = context.new_page()
    errors: list[str] = []
    # A failed load is judged by its response below (the browser's own /favicon.ico 404 aside).
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    yield p
    context.close()
    # A CSP violation or a script error is a defect even when the page looks right.
    assert not errors, errors

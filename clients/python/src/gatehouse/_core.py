"""What the sync and async clients share: how each call is shaped, which calls may be retried,
and how answers are read. The clients only move bytes and sleep."""
from __future__ import annotations

import json
import math
import os
import secrets
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import quote

import httpx

from ._errors import GatehouseError
from ._models import Gate

DEFAULT_URL = "http://127.0.0.1:8080"
#: The server answers a long poll after at most this long; a wait asks again in slices.
MAX_WAIT_SLICE = 300
#: Answers that mean "the server is restarting or overloaded": retried for idempotent calls.
RETRY_STATUSES = {502, 503, 504}

Duration = int | float | str


def base_url(url: str | None) -> str:
    return (url or os.environ.get("GATEHOUSE_URL") or DEFAULT_URL).rstrip("/")


def headers(token: str | None) -> dict[str, str]:
    from . import __version__

    h = {"User-Agent": f"gatehouse-python/{__version__}", "Accept": "application/json"}
    token = token if token is not None else os.environ.get("GATEHOUSE_TOKEN")
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def duration(value: Duration | None) -> str | None:
    """Seconds (int or float) or a Gatehouse duration string (`"2h"`, `"90s"`) → the string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"a duration is seconds (a non-negative number) or a string like '2h', not {value!r}")
    if float(value).is_integer():
        return f"{int(value)}s"
    return f"{round(value * 1000)}ms"


def seconds(value: Duration | None) -> float | None:
    """The same durations as a number of seconds, for the client's own deadlines."""
    if value is None:
        return None
    if not isinstance(value, str):
        duration(value)  # the same checks: finite, not negative
        return float(value)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, number, rest = 0.0, "", value.strip()
    while rest:
        if rest[0].isdigit():
            number += rest[0]
            rest = rest[1:]
            continue
        unit = "ms" if rest.startswith("ms") else rest[0]
        if not number or unit not in units:
            raise ValueError(f"not a duration: {value!r} (use seconds or a string like '2h')")
        total += int(number) * units[unit]
        number, rest = "", rest[len(unit):]
    if number and number.strip("0") == "" and total == 0:
        return 0.0  # "0" needs no unit
    if number:
        raise ValueError(f"not a duration: {value!r} (a number needs a unit, e.g. '90s')")
    return total


def event_id() -> str:
    """A client-side id, so a retried `emit` is stored once (the server counts it a duplicate)."""
    return f"evt_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


#: The server's limits on an event's one-line summary and its details (docs/openapi.yaml).
SUMMARY_MAX = 1000
DETAILS_MAX = 20000
#: …and on a gate's title and details.
TITLE_MAX = 300
GATE_DETAILS_MAX = 10000


def headline(text: str, limit: int) -> str:
    """The first non-empty line of `text`, cut to `limit` characters: what fits a one-line field."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 1] + "…"


def split_text(text: str, summary_max: int, details_max: int) -> tuple[str, str | None]:
    """A one-line summary and, when the text does not fit it, the whole text as details."""
    summary = headline(text, summary_max)
    return summary, (None if summary == text else text[:details_max])


def exception_attributes(exception: BaseException) -> dict[str, str]:
    """An exception as event attributes: type, message and traceback. Bounded so the event fits
    the server's 64 KiB of attributes; the traceback's end (where it failed) is what is kept."""
    trace = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    return {
        "exception_type": type(exception).__name__,
        "message": str(exception)[:8000],
        "traceback": trace if len(trace) <= 16000 else "…" + trace[-16000:],
    }


def path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def drop_none(o: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in o.items() if v is not None}


def error_from(response: httpx.Response) -> GatehouseError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        return GatehouseError(response.status_code, str(problem.get("title", response.reason_phrase)),
                              str(problem.get("detail", "")), problem)
    return GatehouseError(response.status_code, response.reason_phrase, response.text[:500])


def unreachable(url: str, error: Exception) -> GatehouseError:
    return GatehouseError(0, "Unreachable", f"could not reach Gatehouse at {url}: {error}")


def answer(response: httpx.Response, *, text: bool = False) -> Any:
    if response.status_code >= 400:
        raise error_from(response)
    if text:
        return response.text
    if response.status_code == 204 or not response.content:
        return None
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def backoff(attempt: int) -> float:
    """0.25 s, 0.5 s, 1 s, 2 s… (capped at 5 s) between retries."""
    return min(5.0, 0.25 * (2 ** attempt))


@dataclass
class Call:
    """One API call: `idempotent` ones are retried on connection errors and 502/503/504."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    content: bytes | None = None
    stream: Iterator[bytes] | None = None
    content_type: str | None = None
    idempotent: bool = False


# -------------------------------------------------------------------------- calls


def emit(type: str, pipeline: str, *, run: str | None, step: str | None, summary: str | None,
         details: str | None, severity: str | None, labels: Mapping[str, str] | None,
         attributes: Mapping[str, Any] | None, url: str | None, id: str | None) -> tuple[Call, str]:
    event_id_ = id or event_id()
    body = drop_none({"id": event_id_, "type": type, "pipeline": pipeline, "run": run, "step": step,
                      "summary": summary, "details": details, "severity": severity, "labels": dict(labels) if labels else None,
                      "attributes": dict(attributes) if attributes else None, "url": url})
    return Call("POST", "/v1/events", body=body, idempotent=True), event_id_


def open_gate(title: str, *, pipeline: str, run: str | None, step: str | None, key: str | None,
              details: str | None, subject: Mapping[str, Any] | None, approvers: Iterable[str] | None,
              required_approvals: int | None, requested_by: str | None, timeout: Duration | None,
              on_timeout: str | None, remind_every: Duration | None, escalate_after: Duration | None,
              escalate_to: Iterable[str] | None, inputs: Iterable[Mapping[str, Any]] | None,
              choices: Iterable[str] | None, labels: Mapping[str, str] | None,
              attributes: Mapping[str, Any] | None) -> Call:
    body = drop_none({
        "title": title, "pipeline": pipeline, "run": run, "step": step, "key": key, "details": details,
        "subject": dict(subject) if subject else None, "approvers": list(approvers) if approvers else None,
        "required_approvals": required_approvals, "requested_by": requested_by,
        "timeout": duration(timeout), "on_timeout": on_timeout, "remind_every": duration(remind_every),
        "escalate_after": duration(escalate_after), "escalate_to": list(escalate_to) if escalate_to else None,
        "inputs": [dict(i) for i in inputs] if inputs else None, "choices": list(choices) if choices else None,
        "labels": dict(labels) if labels else None, "attributes": dict(attributes) if attributes else None,
    })
    # With a key, opening again resumes the same gate: safe to retry. Without one, a retry
    # after a lost answer would open a second gate.
    return Call("POST", "/v1/gates", body=body, idempotent=key is not None)


def decide(gate_id: str, decision: str, *, by: str | None, comment: str | None,
           inputs: Mapping[str, Any] | None) -> Call:
    body = drop_none({"decision": decision, "by": by, "comment": comment, "inputs": dict(inputs) if inputs else None})
    return Call("POST", path("v1", "gates", gate_id, "decisions"), body=body)


def cancel(gate_id: str, *, comment: str | None) -> Call:
    return Call("POST", path("v1", "gates", gate_id, "cancel"), body=drop_none({"comment": comment}))


def get_gate(gate_id: str) -> Call:
    return Call("GET", path("v1", "gates", gate_id), idempotent=True)


def create_dataset(name: str, *, task: str, labels: Iterable[str], instructions: str | None,
                   annotators_per_item: int) -> Call:
    body = drop_none({"name": name, "task": task, "labels": list(labels), "instructions": instructions,
                      "annotators_per_item": annotators_per_item})
    # The same definition again answers 200 with the dataset: idempotent.
    return Call("POST", "/v1/datasets", body=body, idempotent=True)


def ndjson(items: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    for item in items:
        yield json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def add_items(name: str, items: Iterable[Mapping[str, Any]]) -> Call:
    """NDJSON, one item per line. A list or tuple is sent as one body and retried (items are
    idempotent by id); any other iterable is streamed as it is read, once (it cannot be
    replayed), so a generator over a large file never sits in memory."""
    if isinstance(items, (list, tuple)):
        return Call("POST", path("v1", "datasets", name, "items"), content=b"".join(ndjson(items)),
                    content_type="application/x-ndjson", idempotent=True)
    return Call("POST", path("v1", "datasets", name, "items"), stream=ndjson(items),
                content_type="application/x-ndjson")


def dataset_stats(name: str) -> Call:
    return Call("GET", path("v1", "datasets", name, "stats"), idempotent=True)


def list_datasets() -> Call:
    return Call("GET", "/v1/datasets", idempotent=True)


def delete_dataset(name: str) -> Call:
    return Call("DELETE", path("v1", "datasets", name))


def get_dataset(name: str) -> Call:
    return Call("GET", path("v1", "datasets", name), idempotent=True)


def export(name: str, format: str) -> Call:
    return Call("GET", path("v1", "datasets", name, "export"), params={"format": format}, idempotent=True)


def label(name: str, item_id: str, value: Any, *, task: str, annotator: str | None) -> Call:
    body = drop_none({label_key(task): value, "annotator": annotator})
    return Call("POST", path("v1", "datasets", name, "items", item_id, "labels"), body=body)


def label_key(task: str) -> str:
    """Which field a dataset's labels go in: `label` (classification), `labels` (multilabel),
    `spans` (spans) — by the dataset's task, never guessed from the value (`[]` is a valid
    "no entities" for spans and "none apply" for multilabel)."""
    return {"multilabel": "labels", "spans": "spans"}.get(task, "label")


# ---------------------------------------------------------------------------- waits


@dataclass
class GateWait:
    """The state of a gate wait between long polls (shared by both clients' loops)."""

    gate_id: str | None
    key: str | None
    deadline: float | None
    last: Gate | None = None
    reached: bool = False

    asked: bool = False

    def remaining(self) -> float:
        return (self.deadline - time.monotonic()) if self.deadline is not None else MAX_WAIT_SLICE

    def more(self) -> bool:
        """Ask (again)? Always once, even with a zero timeout: then it is a look, not a wait."""
        if not self.asked:
            self.asked = True
            return True
        return self.remaining() > 0

    def call(self) -> tuple[Call, float]:
        slice_ = max(0, math.ceil(min(self.remaining(), MAX_WAIT_SLICE)))
        if self.gate_id is not None:
            c = Call("GET", path("v1", "gates", self.gate_id, "wait"), params={"timeout": f"{slice_}s"}, idempotent=True)
        else:
            c = Call("GET", "/v1/gates/wait", params={"key": self.key, "timeout": f"{slice_}s"}, idempotent=True)
        return c, slice_ + 15

    def result(self) -> Gate:
        """At the deadline: the gate as it stands (pending), or why there is none."""
        if self.last is not None:
            return self.last
        if self.reached:
            raise GatehouseError(404, "Not Found", f"no gate with key {self.key!r} was opened before the wait timed out")
        raise GatehouseError(0, "Unreachable", "could not reach Gatehouse before the wait timed out")


def wait_target(gate_id: str | None, key: str | None) -> None:
    if (gate_id is None) == (key is None):
        raise ValueError("wait_gate needs a gate id or key=, not both")


def dataset_wait_params(labeled: int | None, agreement: float | None, slice_: float) -> dict[str, Any]:
    return drop_none({"labeled": labeled, "agreement": agreement, "timeout": f"{max(0, math.ceil(slice_))}s"})

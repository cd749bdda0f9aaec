from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

import httpx

from . import _core as core
from ._core import Call, Duration
from ._errors import GatehouseError
from ._models import Gate


class Client:
    """Gatehouse over HTTP, blocking.

    `url` defaults to `GATEHOUSE_URL` (else `http://127.0.0.1:8080`), `token` to
    `GATEHOUSE_TOKEN`. Idempotent calls (reads, an event — it always carries an id —, a gate
    with a `key`, a dataset definition, a list of items) are retried `retries` times on a
    connection error or a 502/503/504; the others are not, since a lost answer may hide a
    request that was applied. Refusals raise `GatehouseError` with the server's problem.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 4, transport: httpx.BaseTransport | None = None) -> None:
        self.url = core.base_url(url)
        self.retries = retries
        self.timeout = timeout
        self._tasks: dict[str, str] = {}  # dataset → task, for which field a label goes in
        self._http = httpx.Client(base_url=self.url, headers=core.headers(token), timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _send(self, call: Call, timeout: float | None = None) -> httpx.Response:
        headers = {"Content-Type": call.content_type} if call.content_type else None
        content: Any = call.content if call.content is not None else call.stream
        return self._http.request(call.method, call.path, params=call.params, json=call.body, content=content,
                                  headers=headers, timeout=timeout or self.timeout)

    def _call(self, call: Call, timeout: float | None = None, *, text: bool = False) -> Any:
        attempt = 0
        while True:
            try:
                response = self._send(call, timeout)
            except httpx.TransportError as error:
                if not call.idempotent or attempt >= self.retries:
                    raise core.unreachable(self.url, error) from error
            else:
                if response.status_code not in core.RETRY_STATUSES or not call.idempotent or attempt >= self.retries:
                    return core.answer(response, text=text)
            time.sleep(core.backoff(attempt))
            attempt += 1

    # --------------------------------------------------------------------- events

    def emit(self, type: str, pipeline: str, *, run: str | None = None, step: str | None = None,
             summary: str | None = None, details: str | None = None, severity: str | None = None,
             labels: Mapping[str, str] | None = None,
             attributes: Mapping[str, Any] | None = None, url: str | None = None, id: str | None = None) -> str:
        """Sends one event; returns its id once the server has committed it (a 202 means on
        disk). An id is made here when none is given, so a retry is never stored twice.
        `summary` is one line (≤ 1,000 characters); longer text goes in `details`."""
        call, event_id = core.emit(type, pipeline, run=run, step=step, summary=summary, details=details, severity=severity,
                                   labels=labels, attributes=attributes, url=url, id=id)
        self._call(call)
        return event_id

    # ---------------------------------------------------------------------- gates

    def open_gate(self, title: str, *, pipeline: str, run: str | None = None, step: str | None = None,
                  key: str | None = None, details: str | None = None, subject: Mapping[str, Any] | None = None,
                  approvers: Iterable[str] | None = None, required_approvals: int | None = None,
                  requested_by: str | None = None, timeout: Duration | None = None, on_timeout: str | None = None,
                  remind_every: Duration | None = None, escalate_after: Duration | None = None,
                  escalate_to: Iterable[str] | None = None, inputs: Iterable[Mapping[str, Any]] | None = None,
                  choices: Iterable[str] | None = None, labels: Mapping[str, str] | None = None,
                  attributes: Mapping[str, Any] | None = None) -> Gate:
        """Opens an approval gate (or, with a `key` already open, returns that gate: a retried
        step resumes its gate). Durations are seconds or strings like `"2h"`."""
        call = core.open_gate(title, pipeline=pipeline, run=run, step=step, key=key, details=details, subject=subject,
                              approvers=approvers, required_approvals=required_approvals, requested_by=requested_by,
                              timeout=timeout, on_timeout=on_timeout, remind_every=remind_every,
                              escalate_after=escalate_after, escalate_to=escalate_to, inputs=inputs, choices=choices,
                              labels=labels, attributes=attributes)
        return Gate.from_json(self._call(call))

    def get_gate(self, gate_id: str) -> Gate:
        return Gate.from_json(self._call(core.get_gate(gate_id)))

    def wait_gate(self, gate_id: str | None = None, *, key: str | None = None, timeout: Duration | None = None) -> Gate:
        """Blocks until the gate closes and returns it; at `timeout` returns it still pending.

        By `key`, it waits even before anything opened the gate (a rule may open it on an event),
        and follows a superseding gate. Long polls are answered the moment the gate closes; if
        the server restarts or the connection drops, the wait reconnects until `timeout`.
        """
        core.wait_target(gate_id, key)
        limit = core.seconds(timeout)
        wait = core.GateWait(gate_id, key, None if limit is None else time.monotonic() + limit)
        while wait.more():
            call, http_timeout = wait.call()
            asked = time.monotonic()
            try:
                response = self._send(call, http_timeout)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if response.status_code in core.RETRY_STATUSES:
                time.sleep(0.5)
                continue
            if response.status_code == 404 and key is not None:
                # Nothing opened the key yet: ask again, after a pause if the 404 came at once.
                wait.reached = True
                if time.monotonic() - asked < 1:
                    time.sleep(min(1.0, max(0.0, wait.remaining())))
                continue
            gate = Gate.from_json(core.answer(response))
            wait.last, wait.reached = gate, True
            if not gate.pending:
                return gate
        return wait.result()

    def gate(self, title: str, *, pipeline: str, wait_timeout: Duration | None = None, **options: Any) -> Gate:
        """Opens a gate and waits for it: `open_gate(...)` then `wait_gate(...)`."""
        opened = self.open_gate(title, pipeline=pipeline, **options)
        if not opened.pending:
            return opened
        return self.wait_gate(opened.id, timeout=wait_timeout)

    def decide(self, gate_id: str, decision: str, *, by: str | None = None, comment: str | None = None,
               inputs: Mapping[str, Any] | None = None) -> Gate:
        """`approve`, `reject` or a branching gate's choice; returns the gate after it."""
        return Gate.from_json(self._call(core.decide(gate_id, decision, by=by, comment=comment, inputs=inputs)))

    def cancel(self, gate_id: str, *, comment: str | None = None) -> Gate:
        return Gate.from_json(self._call(core.cancel(gate_id, comment=comment)))

    # ------------------------------------------------------------------- datasets

    def create_dataset(self, name: str, *, task: str, labels: Iterable[str], instructions: str | None = None,
                       annotators_per_item: int = 1) -> dict[str, Any]:
        """Creates a dataset to label (`classification`, `multilabel` or `spans`); the same
        definition again returns it, another one raises a 409."""
        return self._call(core.create_dataset(name, task=task, labels=labels, instructions=instructions,
                                              annotators_per_item=annotators_per_item))

    def get_dataset(self, name: str) -> dict[str, Any]:
        return self._call(core.get_dataset(name))

    def list_datasets(self) -> list[dict[str, Any]]:
        """Every dataset with its progress (`items`, `labeled`, `complete`) and its `url`."""
        return list((self._call(core.list_datasets()))["datasets"])

    def delete_dataset(self, name: str) -> None:
        """Deletes a dataset with its items and labels."""
        self._tasks.pop(name, None)
        self._call(core.delete_dataset(name))

    def add_items(self, name: str, items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Adds items (`{"id": …, "data": {"text": …}}`) as NDJSON; an id already there is
        counted in `duplicates`. Returns `{"added", "duplicates", "items"}`."""
        return self._call(core.add_items(name, items))

    def dataset_stats(self, name: str) -> dict[str, Any]:
        return self._call(core.dataset_stats(name))

    def wait_dataset(self, name: str, *, labeled: int | None = None, agreement: float | None = None,
                     timeout: Duration | None = None) -> dict[str, Any]:
        """Blocks until `labeled` items (default: all) carry all their labels — and, with
        `agreement`, kappa reached it — or until `timeout`; `reached` says which."""
        limit = core.seconds(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        last: dict[str, Any] | None = None
        first = True
        while True:
            remaining = core.MAX_WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0 and not first:
                break
            first = False
            remaining = max(0.0, remaining)
            slice_ = min(remaining, core.MAX_WAIT_SLICE)
            call = Call("GET", core.path("v1", "datasets", name, "wait"),
                        params=core.dataset_wait_params(labeled, agreement, slice_), idempotent=True)
            try:
                response = self._send(call, slice_ + 15)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if response.status_code in core.RETRY_STATUSES:
                time.sleep(0.5)
                continue
            last = core.answer(response)
            if last.get("reached"):
                return last
        if last is None:
            raise GatehouseError(0, "Unreachable", "could not reach Gatehouse before the wait timed out")
        return last

    def export(self, name: str, format: str = "jsonl") -> str:
        """The dataset with its labels: `jsonl`, `csv` or `label-studio` (JSON text)."""
        return self._call(core.export(name, format), text=True)

    def label(self, name: str, item_id: str, label: Any, *, annotator: str | None = None) -> dict[str, Any]:
        """Labels an item: a class (`"pos"`), several (`["a", "b"]`) or spans
        (`[{"start": 0, "end": 6, "label": "PER"}]`)."""
        task = self._tasks.get(name) or self.get_dataset(name)["task"]
        self._tasks[name] = task
        return self._call(core.label(name, item_id, label, task=task, annotator=annotator))

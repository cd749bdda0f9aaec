"""Airflow 3 with Gatehouse: a notifier for task and DAG callbacks, and an approval gate that
defers while people decide, so a pending approval holds no worker slot.

    from gatehouse.airflow import GatehouseGateOperator, GatehouseNotifier

    with DAG("release", default_args={"on_failure_callback": GatehouseNotifier()}) as dag:
        approve = GatehouseGateOperator(
            task_id="approve", title="Deploy fraud-model v7?", approvers=["web:alice"], timeout="2h")
        train >> approve >> deploy

The gate opens keyed `<dag_id>/<run_id>/<task_id>`, so a retried task resumes its gate instead
of asking again. Approved: the task succeeds and returns the choice (`approve`, or a branching
gate's option). Rejected, expired or canceled: it fails without retrying. With `branches`, a
branching gate also skips every downstream task but the chosen option's.

In events and gates, `pipeline` is the DAG id, `run` the run id and `step` the task id. The
server and token come from the arguments, else the Airflow connection `gatehouse_conn_id`
(host, port, password as the token), else `GATEHOUSE_URL` / `GATEHOUSE_TOKEN`.
"""
from __future__ import annotations

import copy
import hashlib
from datetime import timedelta
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence

from airflow.sdk import BaseHook, BaseNotifier, BaseOperator, BranchMixIn
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from . import _core as core
from ._async import AsyncClient
from ._client import Client
from ._errors import GatehouseError
from ._models import Gate

__all__ = ["GatehouseNotifier", "GatehouseGateOperator", "GatehouseGateTrigger"]


def _server(server_url: str | None, token: str | None, conn_id: str | None) -> tuple[str, str | None]:
    """Arguments first, then the Airflow connection, then the environment (in the client)."""
    if conn_id:
        conn = BaseHook.get_connection(conn_id)
        host = conn.host or ""
        if host and "://" not in host:
            host = f"{conn.schema if conn.schema in ('http', 'https') else 'http'}://{host}"
        if host and conn.port:
            host = f"{host.rstrip('/')}:{conn.port}"
        server_url = server_url or host or None
        token = token or conn.password or None
    return core.base_url(server_url), token


def _where(context: Mapping[str, Any]) -> dict[str, Any]:
    """DAG, run and task of a callback's or a task's context (a DAG callback has the last task)."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    map_index = getattr(ti, "map_index", -1)
    return {
        "pipeline": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None) or "airflow",
        "run": context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None),
        "step": getattr(ti, "task_id", None),
        "map_index": map_index if isinstance(map_index, int) else -1,
        "try_number": getattr(ti, "try_number", None),
        "state": str(getattr(getattr(ti, "state", None), "value", getattr(ti, "state", None)) or ""),
        "dag_state": str(getattr(getattr(dag_run, "state", None), "value", getattr(dag_run, "state", None)) or ""),
        "log_url": getattr(ti, "log_url", None) if ti is not None else None,
    }


def _event_type(context: Mapping[str, Any], where: Mapping[str, Any]) -> str:
    """What happened, from the callback's context — which never says which callback slot ran it.
    A DAG callback (it carries `reason`) is about the run: a success only when the reason says
    so (a timeout or a deadlock is a failure too). A task callback is a success only when the
    task's state says so; a task the scheduler gave up on carries neither state nor exception,
    so anything else is a failure. Give `type=` to fix the type per slot."""
    if "reason" in context:
        return "run.succeeded" if str(context["reason"]) == "success" or where["dag_state"] == "success" else "run.failed"
    if where["state"] == "up_for_retry":
        return "step.retried"
    if where["state"] == "success" and context.get("exception") is None:
        return "step.succeeded"
    return "step.failed"


class GatehouseNotifier(BaseNotifier):
    """Sends one Gatehouse event per callback: `on_failure_callback=GatehouseNotifier()` (also
    `on_success_callback`, `on_retry_callback`, and a DAG's own callbacks).

    The type follows the callback (`step.failed`, `step.succeeded`, `step.retried`,
    `run.failed`, `run.succeeded`) unless `type` is given. A failure carries the exception's
    type, message and traceback in `attributes`, and the task's log URL as the event's `url`.
    `summary`, `details`, `labels` and `attributes` are Jinja templates. The event id is made
    from the run, task and try, so a callback that runs twice is stored once.
    """

    template_fields: Sequence[str] = ("type", "summary", "details", "severity", "labels", "attributes")

    def __init__(self, *, type: str | None = None, summary: str | None = None, details: str | None = None,
                 severity: str | None = None, labels: Mapping[str, str] | None = None,
                 attributes: Mapping[str, Any] | None = None, server_url: str | None = None,
                 token: str | None = None, gatehouse_conn_id: str | None = None) -> None:
        super().__init__()
        self.type = type
        self.summary = summary
        self.details = details
        self.severity = severity
        self.labels = dict(labels) if labels else None
        self.attributes = dict(attributes) if attributes else None
        self.server_url = server_url
        self.token = token
        self.gatehouse_conn_id = gatehouse_conn_id

    def __call__(self, *args: Any) -> None:
        # Rendering the templates overwrites the fields it renders, and `default_args` hands
        # one notifier to every task: each callback renders on a copy of its own.
        BaseNotifier.__call__(copy.copy(self), *args)

    def notify(self, context: Any) -> None:
        where = _where(context)
        kind = self.type or _event_type(context, where)
        exception = context.get("exception")
        attributes: dict[str, Any] = {}
        if isinstance(exception, BaseException):
            attributes.update(core.exception_attributes(exception))
        elif exception:
            attributes["message"] = str(exception)[:8000]
        if "reason" in context:
            attributes["reason"] = str(context["reason"])
        if where["try_number"] is not None:
            attributes["try_number"] = where["try_number"]
        if where["map_index"] >= 0:
            attributes["map_index"] = where["map_index"]
        attributes.update(self.attributes or {})
        summary = self.summary or self._default_summary(kind, where, exception)
        text, overflow = core.split_text(summary, core.SUMMARY_MAX, core.DETAILS_MAX)
        if where["try_number"] is not None:
            # One task try, one event: a callback run twice is stored once.
            seed = "|".join(str(p) for p in (kind, where["pipeline"], where["run"], where["step"], where["map_index"],
                                             where["try_number"], summary))
            event_id = "airflow-" + hashlib.sha256(seed.encode()).hexdigest()[:40]
        else:
            # A DAG callback without a task has nothing that tells one failure of a cleared run
            # from the next: each call is an event of its own.
            event_id = core.event_id()
        url, token = _server(self.server_url, self.token, self.gatehouse_conn_id)
        # Short: a callback must not hold the DAG processor (whose other callbacks wait on it)
        # for minutes when Gatehouse is down.
        with Client(url, token, timeout=10, retries=1) as gh:
            gh.emit(kind, where["pipeline"], run=where["run"], step=where["step"] if kind.startswith("step.") else None,
                    summary=text, details=self.details or overflow,
                    severity=self.severity or ("error" if kind.endswith(".failed") else None),
                    labels=self.labels, attributes=attributes or None, url=where["log_url"],
                    id=event_id)

    @staticmethod
    def _default_summary(kind: str, where: Mapping[str, Any], exception: Any) -> str:
        what = kind.split(".", 1)[1]
        if kind.startswith("run."):
            return f"{where['pipeline']} run {where['run']} {what}"
        cause = f": {type(exception).__name__}: {exception}" if isinstance(exception, BaseException) else ""
        return f"{where['pipeline']}.{where['step']} {what}{cause}"


class GatehouseGateOperator(BaseOperator, BranchMixIn):
    """Opens a Gatehouse approval gate and defers until people close it.

    Approved: succeeds and returns the closing choice (pushed as XCom `return_value`; the gate
    itself — id, state, choice, inputs, url — as XCom `gate`). Rejected, expired, canceled or
    superseded: fails without retrying. `choices` makes a branching gate; with `branches`
    (choice → task id or ids) every other downstream task is skipped.

    The gate is keyed `<dag_id>/<run_id>/<task_id>` (plus the map index) unless `key` is given,
    so a retried or cleared task resumes the same gate. Durations are seconds or strings like
    `"2h"`. `deferrable=False` waits in the worker instead (a slot is held meanwhile).
    """

    template_fields: Sequence[str] = ("title", "details", "key", "subject", "approvers", "requested_by", "labels",
                                      "attributes")
    template_fields_renderers = {"details": "md", "subject": "json", "attributes": "json"}
    inherits_from_skipmixin = True
    ui_color = "#f6e7b4"

    def __init__(self, *, title: str, details: str | None = None, key: str | None = None,
                 approvers: Iterable[str] | None = None, required_approvals: int | None = None,
                 requested_by: str | None = None, choices: Iterable[str] | None = None,
                 branches: Mapping[str, str | Iterable[str]] | None = None,
                 inputs: Iterable[Mapping[str, Any]] | None = None, timeout: core.Duration | None = None,
                 on_timeout: str | None = None, remind_every: core.Duration | None = None,
                 escalate_after: core.Duration | None = None, escalate_to: Iterable[str] | None = None,
                 subject: Mapping[str, Any] | None = None, labels: Mapping[str, str] | None = None,
                 attributes: Mapping[str, Any] | None = None, server_url: str | None = None,
                 token: str | None = None, gatehouse_conn_id: str | None = None, deferrable: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.details = details
        self.key = key
        self.approvers = list(approvers) if approvers is not None else None
        self.required_approvals = required_approvals
        self.requested_by = requested_by
        self.choices = list(choices) if choices is not None else None
        self.branches = {k: (v if isinstance(v, str) else list(v)) for k, v in branches.items()} if branches else None
        self.gate_inputs = [dict(i) for i in inputs] if inputs is not None else None
        self.gate_timeout = timeout
        self.on_timeout = on_timeout
        self.remind_every = remind_every
        self.escalate_after = escalate_after
        self.escalate_to = list(escalate_to) if escalate_to is not None else None
        self.subject = dict(subject) if subject else None
        self.labels = dict(labels) if labels else None
        self.attributes = dict(attributes) if attributes else None
        self.server_url = server_url
        self.token = token
        self.gatehouse_conn_id = gatehouse_conn_id
        self.deferrable = deferrable

    def execute(self, context: Any) -> Any:
        if self.branches is not None:
            # A wrong task id would only show after people decided: refuse it before asking.
            named = {t for targets in self.branches.values() for t in ([targets] if isinstance(targets, str) else targets)}
            unknown = named - set(self.downstream_task_ids) - set(getattr(self.dag, "task_group_dict", {}) or {})
            if unknown:
                raise AirflowFailException(f"branches name tasks that are not downstream of {self.task_id}: {sorted(unknown)}")
        where = _where(context)
        url, token = _server(self.server_url, self.token, self.gatehouse_conn_id)
        key = self.key or "/".join(str(p) for p in (where["pipeline"], where["run"], where["step"]))
        if where["map_index"] >= 0 and not self.key:
            key += f"/{where['map_index']}"
        with Client(url, token) as gh:
            gate = gh.open_gate(
                self.title, pipeline=where["pipeline"], run=where["run"], step=where["step"], key=key,
                details=self.details, subject=self.subject, approvers=self.approvers,
                required_approvals=self.required_approvals, requested_by=self.requested_by,
                timeout=self.gate_timeout, on_timeout=self.on_timeout, remind_every=self.remind_every,
                escalate_after=self.escalate_after, escalate_to=self.escalate_to, inputs=self.gate_inputs,
                choices=self.choices, labels=self.labels, attributes=self.attributes)
            self.log.info("Gate %s (%s) is %s: %s", gate.id, key, gate.state, gate.url or url)
            if gate.pending and not self.deferrable:
                gate = gh.wait_gate(gate.id)
        if gate.pending:
            # The server closes a gate with a timeout itself; the deferral's own limit (an hour
            # past it) only ends a wait on a server that never comes back.
            limit = core.seconds(self.gate_timeout)
            self.defer(trigger=GatehouseGateTrigger(gate_id=gate.id, server_url=url, token=token),
                       method_name="execute_complete", timeout=None if limit is None else timedelta(seconds=limit + 3600))
        return self._finish(context, gate)

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> Any:
        """Resumes the task once the trigger saw the gate close."""
        if "gate" not in event:
            raise AirflowException(f"waiting for the gate failed: {event.get('error', event)}")
        return self._finish(context, Gate.from_json(event["gate"]))

    def _finish(self, context: Any, gate: Gate) -> str | None:
        context["ti"].xcom_push(key="gate", value={
            "id": gate.id, "state": gate.state, "choice": gate.choice, "inputs": gate.inputs, "url": gate.url})
        if not gate.approved:
            outcome = gate.outcome
            why = ""
            if outcome is not None:
                why = f" ({outcome.reason}" + (f" by {outcome.by}" if outcome.by else "") + ")"
                if outcome.comment:
                    why += f": {outcome.comment}"
            raise AirflowFailException(f"gate {gate.id} \"{gate.title}\" closed {gate.state}{why}")
        self.log.info("Gate %s approved: %s", gate.id, gate.choice)
        if self.branches is not None:
            # do_branch ends the task by raising once it skips anything, before the runner would
            # push what the task returns: the choice is pushed here.
            context["ti"].xcom_push(key="return_value", value=gate.choice)
            self.do_branch(context, self.branches.get(gate.choice or ""))
        return gate.choice


class GatehouseGateTrigger(BaseTrigger):
    """Long-polls the gate's `/wait` in the triggerer until it closes. The wait reconnects across
    a server restart or a dropped connection; a gate that no longer exists ends it with an error."""

    def __init__(self, gate_id: str, server_url: str, token: str | None = None) -> None:
        super().__init__()
        self.gate_id = gate_id
        self.server_url = server_url
        self.token = token

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Airflow stores trigger arguments encrypted (Fernet), the token among them.
        return ("gatehouse.airflow.GatehouseGateTrigger",
                {"gate_id": self.gate_id, "server_url": self.server_url, "token": self.token})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async with AsyncClient(self.server_url, self.token) as gh:
                gate = await gh.wait_gate(self.gate_id)
        except GatehouseError as error:
            yield TriggerEvent({"error": str(error), "status": error.status})
            return
        yield TriggerEvent({"gate": gate.raw})

"""ZenML 0.98 flavors backed by Gatehouse: the alerter (with step hooks) and the annotator.

Register and use::

    zenml alerter flavor register gatehouse.zenml.GatehouseAlerterFlavor
    zenml alerter register gatehouse --flavor gatehouse --server_url=http://127.0.0.1:8080
    zenml stack register gated -o default -a default -al gatehouse --set

    @step(on_failure=failure_hook, settings={"alerter": {"approvers": ["web:alice"], "timeout": 7200}})
    def deploy() -> None:
        if not Client().active_stack.alerter.ask("Deploy fraud-model v7?"):
            raise RuntimeError("not approved")

`post()` sends an event that Gatehouse routes to chat or a signed webhook. `ask()` opens an
approval gate and blocks until it closes. The gate is keyed `<run id>/<step>`, so a retried
step resumes its gate instead of asking again. People decide from chat buttons, the web page,
the CLI or the API, and the decision reaches the step in milliseconds: no polling of chat
history.

The annotator maps ZenML's `BaseAnnotator` onto Gatehouse datasets
(`zenml annotator flavor register gatehouse.zenml.GatehouseAnnotatorFlavor`).

In events and gates, `pipeline` is the ZenML pipeline name, `run` the run's UUID, `step` the
step name, and the run name goes into `attributes.run_name`.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, List, Optional, Tuple, Type, cast

from zenml import get_step_context
from zenml.annotators.base_annotator import BaseAnnotator, BaseAnnotatorConfig, BaseAnnotatorFlavor
from zenml.alerter.base_alerter import BaseAlerter, BaseAlerterConfig, BaseAlerterFlavor, BaseAlerterStepParameters
from zenml.config.base_settings import BaseSettings
from zenml.utils.secret_utils import SecretField

from . import _core as core
from ._client import Client
from ._errors import GatehouseError

logger = logging.getLogger(__name__)

GATEHOUSE_FLAVOR = "gatehouse"


class GatehouseAlerterSettings(BaseSettings):
    """Per-step (or per-pipeline) settings: `settings={"alerter": {...}}`.

    Attributes:
        timeout: Seconds the gate stays open; then `on_timeout` decides (reject by default).
            None: it stays open until someone decides.
        approvers: Who may decide (`web:alice`, `slack:U024BE7LH`, `*`); default anyone.
        required_approvals: Approvals needed to pass.
        on_timeout: `reject`, `approve` or `expire`.
    """

    timeout: Optional[float] = None
    approvers: Optional[List[str]] = None
    required_approvals: int = 1
    on_timeout: Optional[str] = None


class GatehouseAlerterConfig(BaseAlerterConfig, GatehouseAlerterSettings):
    """The component's configuration.

    Attributes:
        server_url: Gatehouse's URL; default `GATEHOUSE_URL`, else http://127.0.0.1:8080.
        token: A Gatehouse token with the `events:write`, `gates:write` scopes (a secret).
    """

    server_url: Optional[str] = None
    token: Optional[str] = SecretField(default=None)


class GatehouseAlerterParameters(BaseAlerterStepParameters):
    """What `post()`/`ask()` may add: the event type, severity, labels and attributes."""

    type: Optional[str] = None
    severity: Optional[str] = None
    labels: Optional[Dict[str, str]] = None
    attributes: Optional[Dict[str, Any]] = None


def _where() -> Dict[str, Any]:
    """The running step's pipeline, run and step, or nothing outside a step."""
    try:
        context = get_step_context()
    except RuntimeError:
        return {"pipeline": "zenml", "run": None, "step": None, "run_name": None}
    return {"pipeline": context.pipeline.name, "run": str(context.pipeline_run.id), "step": context.step_run.name,
            "run_name": context.pipeline_run.name}


class GatehouseAlerter(BaseAlerter):
    """Alerts and approvals through Gatehouse."""

    @property
    def config(self) -> GatehouseAlerterConfig:
        return cast(GatehouseAlerterConfig, self._config)

    @property
    def settings_class(self) -> Type[GatehouseAlerterSettings]:
        return GatehouseAlerterSettings

    def client(self) -> Client:
        return Client(self.config.server_url, self.config.token)

    def _settings(self) -> GatehouseAlerterSettings:
        try:
            return cast(GatehouseAlerterSettings, self.get_settings(get_step_context().step_run))
        except RuntimeError:
            return self.config

    def post(self, message: str, params: Optional[BaseAlerterStepParameters] = None) -> bool:
        """Sends `message` as an event (type `zenml.message` unless `params.type`); True once
        Gatehouse has committed it."""
        p = params if isinstance(params, GatehouseAlerterParameters) else GatehouseAlerterParameters()
        where = _where()
        attributes = {**(p.attributes or {}), **({"run_name": where["run_name"]} if where["run_name"] else {})}
        # ZenML's own hooks post multi-line Markdown: its first line is the summary, all of it
        # the details (an event's summary is one line).
        summary, details = core.split_text(message, core.SUMMARY_MAX, core.DETAILS_MAX)
        try:
            with self.client() as gh:
                gh.emit(p.type or "zenml.message", where["pipeline"], run=where["run"], step=where["step"], summary=summary,
                        details=details, severity=p.severity, labels=p.labels, attributes=attributes or None)
            return True
        except GatehouseError as error:
            logger.error("Gatehouse did not take the message: %s", error)
            return False

    def ask(self, question: str, params: Optional[BaseAlerterStepParameters] = None) -> bool:
        """Opens an approval gate with `question` as its title and blocks until it closes;
        True only when approved.

        Keyed by run and step, with the question's hash as the gate's subject digest: a retried
        step asking the same question resumes its gate (and its verdict); another question in
        the same step opens a gate of its own. False also when Gatehouse cannot be reached
        (fail closed, as ZenML's alerters do); a refusal of the request itself (bad token,
        missing scope, invalid settings) raises `GatehouseError`, since it is no one's answer.
        """
        settings = self._settings()
        p = params if isinstance(params, GatehouseAlerterParameters) else GatehouseAlerterParameters()
        where = _where()
        key = f"{where['run']}/{where['step']}" if where["run"] else None
        attributes = {**(p.attributes or {}), **({"run_name": where["run_name"]} if where["run_name"] else {})}
        # The server closes the gate at `timeout`; the wait allows a minute more for that answer.
        wait = settings.timeout + 60 if settings.timeout else None
        title, details = core.split_text(question, core.TITLE_MAX, core.GATE_DETAILS_MAX)
        digest = "sha256:" + hashlib.sha256(question.encode()).hexdigest()
        try:
            with self.client() as gh:
                gate = gh.gate(title, pipeline=where["pipeline"], run=where["run"], step=where["step"], key=key,
                               details=details, subject={"kind": "question", "digest": digest},
                               approvers=settings.approvers, required_approvals=settings.required_approvals,
                               timeout=settings.timeout, on_timeout=settings.on_timeout, labels=p.labels,
                               attributes=attributes or None, wait_timeout=wait)
        except GatehouseError as error:
            if 400 <= error.status < 500:
                raise
            logger.error("Gatehouse could not ask: %s", error)
            return False
        logger.info("Gatehouse gate %s: %s", gate.id, gate.state)
        return gate.approved


class GatehouseAlerterFlavor(BaseAlerterFlavor):
    """`zenml alerter flavor register gatehouse.zenml.GatehouseAlerterFlavor`"""

    @property
    def name(self) -> str:
        return GATEHOUSE_FLAVOR

    @property
    def docs_url(self) -> Optional[str]:
        return None

    @property
    def sdk_docs_url(self) -> Optional[str]:
        return None

    @property
    def logo_url(self) -> Optional[str]:
        return None

    @property
    def config_class(self) -> Type[GatehouseAlerterConfig]:
        return GatehouseAlerterConfig

    @property
    def implementation_class(self) -> Type[GatehouseAlerter]:
        return GatehouseAlerter


def _stack_client() -> Client:
    """The active stack's Gatehouse alerter's client, else one from `GATEHOUSE_URL`."""
    from zenml.client import Client as ZenMLClient

    alerter = ZenMLClient().active_stack.alerter
    return alerter.client() if isinstance(alerter, GatehouseAlerter) else Client()


def failure_hook(exception: BaseException) -> None:
    """`@step(on_failure=failure_hook)`: sends `step.failed` with the exception's type,
    message and traceback in `attributes`."""
    where = _where()
    attributes: Dict[str, Any] = core.exception_attributes(exception)
    if where["run_name"]:
        attributes["run_name"] = where["run_name"]
    with _stack_client() as gh:
        gh.emit("step.failed", where["pipeline"], run=where["run"], step=where["step"], severity="error",
                summary=core.headline(f"{where['step']} failed: {type(exception).__name__}: {exception}", core.SUMMARY_MAX),
                attributes=attributes)


def success_hook() -> None:
    """`@step(on_success=success_hook)`: sends `step.succeeded`."""
    where = _where()
    with _stack_client() as gh:
        gh.emit("step.succeeded", where["pipeline"], run=where["run"], step=where["step"],
                attributes={"run_name": where["run_name"]} if where["run_name"] else None)


# ------------------------------------------------------------------------------ annotator

class GatehouseAnnotatorConfig(BaseAnnotatorConfig):
    """Attributes:
        server_url: Gatehouse's URL; default `GATEHOUSE_URL`, else http://127.0.0.1:8080.
        token: A Gatehouse token with the `datasets:write` scope (a secret).
    """

    server_url: Optional[str] = None
    token: Optional[str] = SecretField(default=None)


class GatehouseAnnotator(BaseAnnotator):
    """ZenML's annotator interface over Gatehouse datasets: people label at
    `/annotate/<dataset>` on the server (keys 1–9, spans by selection), with overlap and
    agreement, and the pipeline waits on the dataset or reads its labels back."""

    @property
    def config(self) -> GatehouseAnnotatorConfig:
        return cast(GatehouseAnnotatorConfig, self._config)

    def client(self) -> Client:
        return Client(self.config.server_url, self.config.token)

    def get_url(self) -> str:
        """The person's inbox: what waits for them across datasets."""
        return f"{core.base_url(self.config.server_url)}/inbox"

    def get_url_for_dataset(self, dataset_name: str) -> str:
        return str(self._dataset(dataset_name)["url"])

    def _dataset(self, name: str) -> Dict[str, Any]:
        """A dataset, or ValueError naming it (what ZenML's `annotator dataset` CLI expects)."""
        try:
            with self.client() as gh:
                return gh.get_dataset(name)
        except GatehouseError as error:
            if error.status == 404:
                raise ValueError(f"Dataset {name} not found. Use `zenml annotator dataset list` to list them.") from error
            raise

    def get_datasets(self) -> List[Any]:
        with self.client() as gh:
            return gh.list_datasets()

    def get_dataset_names(self) -> List[str]:
        return [d["name"] for d in self.get_datasets()]

    def get_dataset_stats(self, dataset_name: str) -> Tuple[int, int]:
        """(items with all their labels, items still needing some)."""
        self._dataset(dataset_name)
        with self.client() as gh:
            stats = gh.dataset_stats(dataset_name)
        return int(stats["labeled"]), int(stats["total"]) - int(stats["labeled"])

    def launch(self, **kwargs: Any) -> str:
        """Prints and returns where people label (a dataset's page with `dataset_name=`)."""
        name = kwargs.get("dataset_name")
        url = kwargs.get("url") or (self.get_url_for_dataset(name) if name else self.get_url())
        print(f"Label at {url}")
        return url

    def add_dataset(self, **kwargs: Any) -> Any:
        """`dataset_name=`, `labels=`, and optionally `task=` (classification, multilabel or
        spans), `instructions=`, `annotators_per_item=`. The same definition again returns
        the dataset."""
        name, labels = kwargs.get("dataset_name"), kwargs.get("labels")
        if not name or not labels:
            raise ValueError("add_dataset needs dataset_name= and labels=")
        with self.client() as gh:
            return gh.create_dataset(name, task=kwargs.get("task", "classification"), labels=labels,
                                     instructions=kwargs.get("instructions"),
                                     annotators_per_item=int(kwargs.get("annotators_per_item", 1)))

    def get_dataset(self, **kwargs: Any) -> Any:
        return self._dataset(self._name(kwargs))

    def delete_dataset(self, **kwargs: Any) -> None:
        name = self._name(kwargs)
        self._dataset(name)
        with self.client() as gh:
            gh.delete_dataset(name)

    def get_labeled_data(self, **kwargs: Any) -> Any:
        """Items with all their labels: `id`, `data`, `label` (the majority) and `labels`
        (everyone's, with who and when)."""
        return [item for item, done in self._items(self._name(kwargs)) if done]

    def get_unlabeled_data(self, **kwargs: str) -> Any:
        """Items still needing labels (with any labels they already have)."""
        return [item for item, done in self._items(self._name(kwargs)) if not done]

    @staticmethod
    def _name(kwargs: Dict[str, Any]) -> str:
        name = kwargs.get("dataset_name")
        if not name:
            raise ValueError("`dataset_name` keyword argument is required.")
        return str(name)

    def _items(self, name: str) -> List[Tuple[Dict[str, Any], bool]]:
        import json

        needed = int(self._dataset(name)["annotators_per_item"])
        with self.client() as gh:
            lines = gh.export(name).splitlines()
        items = [json.loads(line) for line in lines if line.strip()]
        return [(item, len(item.get("labels", [])) >= needed) for item in items]


class GatehouseAnnotatorFlavor(BaseAnnotatorFlavor):
    """`zenml annotator flavor register gatehouse.zenml.GatehouseAnnotatorFlavor`"""

    @property
    def name(self) -> str:
        return GATEHOUSE_FLAVOR

    @property
    def docs_url(self) -> Optional[str]:
        return None

    @property
    def sdk_docs_url(self) -> Optional[str]:
        return None

    @property
    def logo_url(self) -> Optional[str]:
        return None

    @property
    def config_class(self) -> Type[GatehouseAnnotatorConfig]:
        return GatehouseAnnotatorConfig

    @property
    def implementation_class(self) -> Type[GatehouseAnnotator]:
        return GatehouseAnnotator

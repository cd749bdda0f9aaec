"""Gatehouse from Python: send pipeline events, pause on approval gates, queue items to label.

    from gatehouse import Client

    gh = Client()                      # GATEHOUSE_URL / GATEHOUSE_TOKEN, else http://127.0.0.1:8080
    gh.emit("run.failed", "train", run="r42", summary="OOM in step fit")
    gate = gh.gate("Deploy fraud-model v7?", pipeline="train", run="r42", key="r42/deploy",
                   approvers=["web:alice"], timeout="2h")
    if not gate.approved:
        raise SystemExit(f"not deployed: {gate.state}")

`AsyncClient` has the same methods as coroutines.
"""
from ._errors import GatehouseError
from ._models import Gate, GateDecision, GateOutcome
from ._client import Client
from ._async import AsyncClient

__all__ = ["Client", "AsyncClient", "Gate", "GateDecision", "GateOutcome", "GatehouseError"]
__version__ = "0.1.0"

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    """One person's (or policy's) answer to a gate."""

    by: str
    decision: str
    via: str
    at: str
    comment: str | None = None
    inputs: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, o: dict[str, Any]) -> "GateDecision":
        return cls(by=o["by"], decision=o["decision"], via=o.get("via", "api"), at=o["at"],
                   comment=o.get("comment"), inputs=o.get("inputs"))


@dataclass(frozen=True)
class GateOutcome:
    """How a gate closed: `reason` is decision, policy, timeout, canceled or superseded."""

    state: str
    reason: str
    at: str
    choice: str | None = None
    by: str | None = None
    comment: str | None = None

    @classmethod
    def from_json(cls, o: dict[str, Any]) -> "GateOutcome":
        return cls(state=o["state"], reason=o["reason"], at=o["at"], choice=o.get("choice"),
                   by=o.get("by"), comment=o.get("comment"))


@dataclass(frozen=True)
class Gate:
    """An approval gate as the server last showed it. `raw` keeps the whole document."""

    id: str
    state: str
    title: str
    pipeline: str
    url: str | None
    key: str | None
    choices: list[str]
    inputs: dict[str, Any]
    decisions: list[GateDecision]
    outcome: GateOutcome | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    @property
    def approved(self) -> bool:
        """True only when the gate closed approved (a branching gate: on a choice other than
        `reject`)."""
        return self.state == "approved"

    @property
    def choice(self) -> str | None:
        """The closing choice: `approve`, `reject`, or a branching gate's option."""
        return self.outcome.choice if self.outcome else None

    @classmethod
    def from_json(cls, o: dict[str, Any]) -> "Gate":
        outcome = o.get("outcome")
        return cls(
            id=o["id"], state=o["state"], title=o.get("title", ""), pipeline=o.get("pipeline", ""),
            url=o.get("url"), key=o.get("key"), choices=list(o.get("choices", [])),
            inputs=dict(o.get("inputs", {})),
            decisions=[GateDecision.from_json(d) for d in o.get("decisions", [])],
            outcome=GateOutcome.from_json(outcome) if outcome else None, raw=o)

from __future__ import annotations

from typing import Any


class GatehouseError(Exception):
    """A request Gatehouse refused (its `application/problem+json` answer), or one that could
    not reach the server at all (`status` 0).

    `problem` is the whole problem document: for a 422, `problem["errors"]` names each bad field.
    """

    def __init__(self, status: int, title: str, detail: str, problem: dict[str, Any] | None = None) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = problem or {}
        super().__init__(f"{status} {title}: {detail}" if status else detail)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The field errors of a 422 (`[{"field": "timeout", "detail": "..."}]`)."""
        return list(self.problem.get("errors", []))

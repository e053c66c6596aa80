"""Reading PostgreSQL's EXPLAIN (FORMAT JSON) plans in tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The plan's node and every node below it."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)

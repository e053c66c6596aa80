"""Small statistics: medians over rounds, ratios of the pairs run in turns,
percentiles over samples."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def median(values: Iterable[float]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def in_turns(number: int, *sides: T) -> tuple[T, ...]:
    """The sides of round ``number`` in the order they run: as given in even
    rounds, reversed in odd ones (ABBA), so that a machine that speeds up or
    slows down steadily favours none of them. Of three, the middle one runs
    next to each of the others in every round."""
    return sides if number % 2 == 0 else sides[::-1]


def paired_ratios(
    numerators: Mapping[int, float | None], denominators: Mapping[int, float | None]
) -> list[float]:
    """numerator / denominator for every round that has both, in round order."""
    out = []
    for number in sorted(numerators.keys() & denominators.keys()):
        value = ratio(numerators[number], denominators[number])
        if value is not None:
            out.append(value)
    return out

"""Phone numbers: which ones may receive an SMS, and how one is written
where people other than its owner may read it (log lines)."""

from __future__ import annotations

from collections.abc import Iterable


def allowed(number: str, prefixes: Iterable[str]) -> bool:
    """Whether an E.164 number starts with one of the allowed prefixes: the
    allow-list is what keeps premium and far-away ranges (``+882``, say) from
    being texted at the operator's expense."""
    return any(number.startswith(prefix) for prefix in prefixes)


def mask(number: str) -> str:
    """The number with all but its first four and last two characters
    starred (``+234*******78``): enough to tell a country and a number apart
    in a log line, not enough to text anyone."""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 6) + number[-2:]

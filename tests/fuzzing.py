"""The contract fuzzer: schemathesis over the daemon's own /openapi.json, every
check in every phase, as one logged-in user. Used by the fuzz test in the
suite (a short budget) and by ``make fuzz`` (a long one)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from schemathesis.engine import Status, events, from_schema

from voltpay.http.schemas import IDEMPOTENCY_KEY_PATTERN

# A schema-valid request may still be refused for reasons no schema can
# foresee: a wrong password (401), an empty wallet (402), an id that names
# nothing of the caller's (404), a bill already paid (409) or expired (410),
# a business rule (422), a limit (429). Anything else, 400 above all, says
# that the document and the server disagree.
BUSINESS_REFUSALS = ("401", "402", "404", "409", "410", "422", "429")
# A required header left out: 428 is the status for a missing precondition
# (an operator's Idempotency-Key), besides schemathesis's own list.
MISSING_HEADER = ("400", "401", "403", "406", "415", "422", "428")
# Paths that end sessions: each call gets a session of its own to end.
ENDS_THIS_SESSION = "/api/auth/logout"
ENDS_EVERY_SESSION = "/api/auth/logout-all"
# The run's session tokens while they are live (schemathesis's own probes
# send tokens of their own, and logout-all ends the live one).
LIVE_SESSIONS: set[str] = set()
# The second pass's budget, over the operations the first left unreached.
SECOND_PASS_SECONDS = 10


@dataclass
class Failure:
    check: str
    operation: str
    status: int | None
    title: str
    message: str
    curl: str

    def __str__(self) -> str:
        return (
            f"{self.operation}: {self.check} ({self.title}), answered {self.status}\n"
            f"  {self.message.strip()}\n  {self.curl}"
        )


@dataclass
class Report:
    seed: int
    seconds: float = 0.0
    requests: int = 0
    cases: int = 0
    failures: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    # Each operation's refusals by status and problem code, as "422 invalid_cursor".
    refusals: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    stop_reason: str = ""
    # The operations the first pass left to the second.
    second_pass: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.requests} requests, {self.cases} cases in "
            f"{self.seconds:.0f} s ({self.stop_reason}); {len(self.failures)} failures, "
            f"{len(self.errors)} errors"
            + (f"; second pass: {', '.join(self.second_pass)}" if self.second_pass else "")
        )

    def untested(self, operations: set[str]) -> set[str]:
        """Operations that never answered anything but a refusal of the
        request's credentials, ids or method: the run never reached their
        logic."""
        reached = {
            label
            for label, seen in self.statuses.items()
            if any(status not in (401, 404, 405) for status in seen)
        }
        return operations - reached


def _sessions(base_url: str, username: str, password: str) -> type:
    """The user's bearer token as a client keeps it: one session, logged in
    again after an operation ended it. Logout and logout-all each end a
    session of their own, so the rest of the run keeps its token."""

    def log_in() -> str:
        answer = requests.post(
            f"{base_url}/api/auth/login",
            json={"username": username, "password": password},
            timeout=30,
        )
        answer.raise_for_status()
        token: str = answer.json()["token"]
        return token

    class Sessions:
        token: str | None = None

        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            path = context.operation.path
            if path == ENDS_THIS_SESSION:
                return log_in()
            if path == ENDS_EVERY_SESSION:
                LIVE_SESSIONS.discard(Sessions.token or "")
                Sessions.token = None
                return log_in()
            if Sessions.token is None:
                Sessions.token = log_in()
                LIVE_SESSIONS.add(Sessions.token)
            return Sessions.token

        def set(
            self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext
        ) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return Sessions


@schemathesis.check
def session_honoured(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A schema-valid request sent with the run's session is never refused
    as unauthenticated: 401 is a business refusal only as a wrong password
    (``invalid_credentials``), never ``unauthorized``."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 401:
        return
    token = (case.headers or {}).get("Authorization", "").removeprefix("Bearer ")
    if token in LIVE_SESSIONS and _code(response) == "unauthorized":
        raise AssertionError("a schema-valid request with a live session was answered 401")


def keyed_by_request(case: schemathesis.Case) -> schemathesis.Case:
    """A well-formed Idempotency-Key made the request's own: generated keys
    are short and collide, and a key used with another request answers 422
    (as documented) before the operation is reached at all. The same key on
    the same request stays the same, so replays are still exercised; a
    malformed key is left as it is, for the 400."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        request = json.dumps(
            [case.method, case.path, case.path_parameters, case.body], sort_keys=True, default=repr
        )
        digest = hashlib.sha256(request.encode()).hexdigest()[:16]
        case.headers = {**headers, "Idempotency-Key": f"{key[:238]}.{digest}"}
    return case


def config(
    *, seed: int, seconds: int, max_examples: int, stateful: bool = True
) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            # The stateful phase follows links between operations, which a
            # pass over some of them leaves out.
            "phases": {"stateful": {"enabled": stateful}},
            "seed": seed,
            "max-time": seconds,
            "workers": 1,
            "color": False,
            # Nothing learned in one run carries into the next: a seed is a run.
            "cache": {"enabled": False},
            "generation": {"max-examples": max_examples, "database": "none"},
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx", *BUSINESS_REFUSALS]},
                "missing_required_header": {"expected-statuses": list(MISSING_HEADER)},
            },
        }
    )


def fuzz(
    base_url: str,
    *,
    username: str,
    password: str,
    seed: int,
    seconds: int,
    max_examples: int = 100,
    own_ids: Mapping[str, str] | None = None,
    unreachable: Collection[str] = (),
) -> Report:
    """Every check, every phase, against the document the daemon serves.

    Then a second pass, of at most ``SECOND_PASS_SECONDS``, over the
    operations the first left unreached (a slow machine's short budget ends
    before it gets to some), with the same checks but the stateful phase. An
    operation on one of the user's own objects is reached only with that
    object's id, which the first pass finds by following links from other
    answers, in some runs and not others: in the second, each schema-valid
    request's ids are the user's own, from ``own_ids`` (path parameter name →
    id). An operation with an id not in ``own_ids`` is left out of it, and
    so are those ``unreachable`` names (refused whatever the fuzzer sends)."""
    schema = schemathesis.openapi.from_url(
        f"{base_url}/openapi.json",
        config=config(seed=seed, seconds=seconds, max_examples=max_examples),
    )
    report = Report(seed=seed)
    started = time.monotonic()
    _run(schema, report, base_url, username, password, own_ids={})
    labels = {
        f"{method.upper()} {path}"
        for path, methods in schema.raw_schema["paths"].items()
        for method in methods
    }
    missed = {
        label
        for label in report.untested(labels) - set(unreachable)
        if set(re.findall(r"{(\w+)}", label)) <= set(own_ids or ())
    }
    if missed:
        again = schemathesis.openapi.from_url(
            f"{base_url}/openapi.json",
            config=config(
                seed=seed,
                seconds=SECOND_PASS_SECONDS,
                max_examples=max_examples,
                stateful=False,
            ),
        ).include(name=sorted(missed))
        _run(again, report, base_url, username, password, own_ids=own_ids or {})
        report.second_pass = sorted(missed)
    report.seconds = time.monotonic() - started
    return report


def _run(
    schema: Any,
    report: Report,
    base_url: str,
    username: str,
    password: str,
    *,
    own_ids: Mapping[str, str],
) -> None:
    schema.auth(refresh_interval=None)(_sessions(base_url, username, password))

    @schema.hook
    def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
        return keyed_by_request(with_own_ids(case, own_ids))

    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _record(report, event.recorder)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            reason = str(event.stop_reason)
            before = report.stop_reason
            report.stop_reason = f"{before}, then {reason}" if before else reason


def with_own_ids(case: schemathesis.Case, own_ids: Mapping[str, str]) -> schemathesis.Case:
    """A schema-valid request's path ids set to the user's own; a request
    made invalid on purpose keeps what it was given, for its 4xx."""
    meta = case.meta
    if not own_ids or not case.path_parameters or meta is None:
        return case
    if not meta.generation.mode.is_positive:
        return case
    case.path_parameters = {
        name: own_ids.get(name, value) for name, value in case.path_parameters.items()
    }
    return case


def _code(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return "-"
    return str(body.get("code", "-")) if isinstance(body, dict) else "-"


def _record(report: Report, recorder: Any) -> None:
    report.cases += len(recorder.cases)
    for case_id, interaction in recorder.interactions.items():
        report.requests += 1
        response = interaction.response
        if response is not None:
            label = recorder.cases[case_id].value.operation.label
            report.statuses[label][response.status_code] += 1
            if response.status_code >= 400:
                report.refusals[label][f"{response.status_code} {_code(response)}"] += 1
    seen = {(f.check, f.operation, f.title) for f in report.failures}
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status != Status.FAILURE or check.failure_info is None:
                continue
            failure = check.failure_info.failure
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction is not None else None
            found = Failure(
                check=check.name,
                operation=failure.operation,
                status=response.status_code if response is not None else None,
                title=failure.title,
                message=failure.message,
                curl=check.failure_info.code_sample,
            )
            if (found.check, found.operation, found.title) not in seen:
                seen.add((found.check, found.operation, found.title))
                report.failures.append(found)

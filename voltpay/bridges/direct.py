"""The event pipeline's hot calls, made without the client's per-call machinery.

A PublishBatch, ReceiveMessage or DeleteMessageBatch through an aiobotocore
client spends most of its CPU around the request rather than on it: a dozen
events emitted through the hook system, the endpoint rules evaluated, the
retry handler, aiobotocore's HTTP wrapper. Against an endpoint that answers at
once, measured in turns, the three calls that carry ten events cost 0.47 ms of
CPU per event through the client (a fifth to a third of a payment's CPU), 0.28
ms through here (bench/results/2026-11-29-vm.md).

What stays botocore's: the wire protocol (its serializer and parser for the
service, driven by the client's own service model, validation included), the
credential chain, the retry rules of its "standard" mode, and on
an error answer the client's own handlers and modeled exceptions, so a caller
sees the same answers and the same errors as from the client. What is ours:
the SigV4 signature (``signing.Signer``, header for header botocore's), and
sending the signed request with aiohttp and trying it again as that mode would
(without its retry quota: the relay and the poller back off on their own).

What is skipped on a successful call are the client's other per-call
handlers; for these three operations they add nothing (no idempotency token,
no checksum, no operation-specific signer).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.model import OperationModel
from botocore.parsers import create_parser
from botocore.retries.standard import (
    ExponentialBackoff,
    RetryContext,
    RetryPolicy,
    StandardRetryConditions,
)
from botocore.serialize import create_serializer

from voltpay.bridges.forms import form_encode
from voltpay.bridges.signing import Signer

# botocore's serializers, parsers and retry rules know these two protocols.
_PROTOCOLS = frozenset({"query", "json"})


class DirectCalls:
    """One service's calls, on the client's model and endpoint, sent directly.

    ``client`` stays the way to everything else (provisioning, checks).
    """

    def __init__(
        self,
        client: Any,
        *,
        credentials: Any,
        http: aiohttp.ClientSession,
        max_attempts: int,
        user_agent: str,
        rng: Callable[[], float] = random.random,
    ) -> None:
        meta = client.meta
        model = meta.service_model
        if model.protocol not in _PROTOCOLS:
            raise ValueError(f"{model.service_name}: protocol {model.protocol!r} is not supported")
        self.client = client
        self._model = model
        self._url = meta.endpoint_url.rstrip("/")
        self._region = meta.region_name
        self._credentials = credentials
        self._http = http
        self._user_agent = user_agent
        self._serializer = create_serializer(model.protocol, include_validation=True)
        self._parser = create_parser(model.protocol)
        self._signers: dict[str, Signer] = {}
        self._retries = RetryPolicy(
            StandardRetryConditions(max_attempts=max_attempts), ExponentialBackoff(random=rng)
        )

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """What ``getattr(client, snake_case(operation))(**params)`` answers.

        Raises the client's modeled ``ClientError`` for an error answer, and
        botocore's connection errors when the endpoint cannot be reached, once
        the standard retries are spent.
        """
        model = self._model.operation_model(operation)  # cached by botocore
        request = self._serializer.serialize_to_request(params, model)
        if request["query_string"]:
            raise ValueError(f"{operation}: a query string is not supported")
        url = self._url + request["url_path"]
        headers = {**request["headers"], "User-Agent": self._user_agent}
        body = request["body"]
        data: bytes = form_encode(body) if isinstance(body, dict) else body
        attempt = 0
        while True:
            attempt += 1
            try:
                status, reply_headers, raw = await self._send(url, headers, data)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = _connection_error(url, exc)
                context = RetryContext(attempt, model, caught_exception=failure)
                if not self._retries.should_retry(context):
                    raise failure from exc
            else:
                parsed: dict[str, Any] = self._parser.parse(
                    {"status_code": status, "headers": reply_headers, "body": raw},
                    model.output_shape,
                )
                if status < 300:
                    return parsed
                response = AWSResponse(url, status, reply_headers, None)
                context = RetryContext(attempt, model, parsed, response)
                if not self._retries.should_retry(context):
                    raise await self._error(model, response, parsed)
            await asyncio.sleep(self._retries.compute_retry_delay(context))

    async def _error(
        self, model: OperationModel, response: AWSResponse, parsed: dict[str, Any]
    ) -> Exception:
        """The client's own exception for an error answer.

        The client's handlers for the answer run first, as they would for the
        client's call: for SQS, one of them picks the modeled exception class.
        """
        request_context: dict[str, Any] = {}
        service_id = self._model.service_id.hyphenize()
        await self.client.meta.events.emit(
            f"after-call.{service_id}.{model.name}",
            http_response=response,
            parsed=parsed,
            model=model,
            context=request_context,
        )
        code = request_context.get("error_code_override") or parsed.get("Error", {}).get("Code")
        error: Exception = self.client.exceptions.from_code(code)(parsed, model.name)
        return error

    async def _send(
        self, url: str, headers: Mapping[str, str], data: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        # Signed afresh on every attempt: the signature carries the time.
        if self._credentials is None:
            raise NoCredentialsError()
        credentials = await self._credentials.get_frozen_credentials()
        signed = self._signer(url).sign(headers, data, credentials)
        async with self._http.post(url, data=data, headers=signed) as reply:
            return reply.status, reply.headers, await reply.read()

    def _signer(self, url: str) -> Signer:
        signer = self._signers.get(url)
        if signer is None:
            signer = Signer(url, service=self._model.signing_name, region=self._region)
            self._signers[url] = signer
        return signer


def _connection_error(url: str, exc: BaseException) -> Exception:
    """botocore's error for what aiohttp raised, as its retry rules know them."""
    error: Exception
    if isinstance(exc, TimeoutError):
        error = ReadTimeoutError(endpoint_url=url, error=exc)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = EndpointConnectionError(endpoint_url=url, error=exc)
    else:
        error = ConnectionClosedError(endpoint_url=url, error=exc)
    return error

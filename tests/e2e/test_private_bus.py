"""The default embedded bus, attacked by another local user: it finds the
bus's loopback port and tries moto's dashboard and reset, receiving and
deleting the daemon's messages and publishing a forged event, with no
signature, a made-up one and one made with its own keys. Everything is
refused, and the forged event never becomes an SMS."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from tests.client import Api, eventually
from tests.e2e.conftest import Daemons
from tests.fakes.twilio_server import FakeTwilioServer

ROOT = Path(__file__).resolve().parents[2]
FORGED_AMOUNT = "987654.32"

# Run as root, it imports all it needs, then becomes nobody before it sends
# anything (nobody cannot read the interpreter's files under /root).
_ATTACKER = textwrap.dedent(
    """
    import encodings.idna, http.client, json, os, sys
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    port, topic_arn, queue_url, forged = sys.argv[1:5]
    if os.geteuid() == 0:
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    host = f"127.0.0.1:{port}"
    MADE_UP = ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261207/us-east-1/{}/"
               "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "ab" * 32)

    def send(method, path, body=b"", headers=None):
        connection = http.client.HTTPConnection(host, timeout=10)
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        content = response.read()
        connection.close()
        return response.status, len(content)

    def own_keys(service, body, headers):
        request = AWSRequest("POST", f"http://{host}/", data=body, headers=dict(headers))
        SigV4Auth(Credentials("AKIAATTACKER", "attacker-secret"), service,
                  "us-east-1").add_auth(request)
        return dict(request.headers.items())

    sqs = lambda target: {"Content-Type": "application/x-amz-json-1.0",
                          "X-Amz-Target": f"AmazonSQS.{target}"}
    receive = json.dumps({"QueueUrl": queue_url, "MaxNumberOfMessages": 10}).encode()
    delete = json.dumps({"QueueUrl": queue_url, "ReceiptHandle": "x" * 185}).encode()
    publish = ("Action=Publish&Version=2010-03-31&TopicArn=" + topic_arn
               + "&Message=" + forged).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    made_up = lambda service: {"Authorization": MADE_UP.format(service),
                               "X-Amz-Date": "20261207T000000Z"}
    results = {"uid": [os.geteuid()]}
    results["dashboard"] = send("GET", "/moto-api/data.json")
    results["dashboard config"] = send("GET", "/moto-api/config")
    results["reset"] = send("POST", "/moto-api/reset")
    results["list queues by query"] = send("GET", "/?Action=ListQueues")
    results["receive, no auth"] = send("POST", "/", receive, sqs("ReceiveMessage"))
    results["receive, made-up"] = send(
        "POST", "/", receive, {**sqs("ReceiveMessage"), **made_up("sqs")})
    results["receive, own keys"] = send(
        "POST", "/", receive, own_keys("sqs", receive, sqs("ReceiveMessage")))
    results["delete, made-up"] = send(
        "POST", "/", delete, {**sqs("DeleteMessage"), **made_up("sqs")})
    results["delete, own keys"] = send(
        "POST", "/", delete, own_keys("sqs", delete, sqs("DeleteMessage")))
    results["publish, no auth"] = send("POST", "/", publish, form)
    results["publish, made-up"] = send("POST", "/", publish, {**form, **made_up("sns")})
    results["publish, own keys"] = send("POST", "/", publish, own_keys("sns", publish, form))
    print(json.dumps(results))
    """
)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, never a ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _listening_ports(pid: int) -> list[int]:
    """The loopback TCP ports ``pid`` listens on, from its sockets and /proc/net/tcp."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and inode in inodes:  # 0A: LISTEN
            ports.append(int(local.split(":")[1], 16))
    return ports


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer(account_sid="AC" + "2" * 32, auth_token="u" * 32) as server:
        yield server


def _why_not() -> str | None:
    if not Path("/proc/net/tcp").is_file():
        return "needs /proc to find the bus's port"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            return "running as root, and there is no nobody user to attack as"
    return None


def _attack(port: int, forged: dict[str, object]) -> dict[str, list[int]]:
    """What the bus answered each attempt, from another user's process."""
    attack = subprocess.run(
        [
            sys.executable,
            "-c",
            _ATTACKER,
            str(port),
            "arn:aws:sns:us-east-1:123456789012:voltpay-events",
            f"http://127.0.0.1:{port}/123456789012/voltpay-notifications",
            json.dumps(forged),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert attack.returncode == 0, attack.stderr
    results: dict[str, list[int]] = json.loads(attack.stdout)
    return results


@pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")
async def test_a_local_user_can_neither_read_nor_write_the_embedded_bus(
    daemons: Daemons, http: aiohttp.ClientSession, twilio: FakeTwilioServer
) -> None:
    daemon = daemons.start(
        {
            "VOLTPAY_TWILIO__ACCOUNT_SID": twilio.account_sid,
            "VOLTPAY_TWILIO__AUTH_TOKEN": twilio.auth_token,
            "VOLTPAY_TWILIO__FROM_NUMBER": "+15005550006",
            "VOLTPAY_TWILIO__BASE_URL": twilio.base_url,
        }
    )
    await daemon.wait_ready(http)
    api = Api(http, daemon.base_url)
    await api.register_and_login()
    me = api.me
    children = _children(daemon.pid)
    assert len(children) == 1, daemon.describe()
    (bus,) = children
    (port,) = _listening_ports(bus)

    forged = {
        "eventId": str(uuid.uuid4()),
        "type": "wallet_funded",
        "occurredAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "userId": me.user_id,
            "walletId": me.wallet_id,
            "transactionId": str(uuid.uuid4()),
            "amount": FORGED_AMOUNT,
            "balance": FORGED_AMOUNT,
        },
    }
    results = await asyncio.to_thread(_attack, port, forged)
    assert results.pop("uid") != [0]
    assert {name: status for name, (status, _) in results.items()} == {
        name: 403 for name in results
    }

    # The bus still carries the daemon's own events (a reset would have wiped it).
    async with http.get(daemon.base_url + "/readyz") as ready:
        assert ready.status == 200
    await api.add_funds("50.00")

    async def funded_texted() -> bool:
        return any("50.00" in m["body"] for m in twilio.messages if m["to"] == me.phone)

    await eventually(funded_texted, timeout=30, what="the real wallet_funded SMS")
    # A drain consumes the embedded queue to the end: whatever was on it is texted.
    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(40) == 0
    texts = [m["body"] for m in twilio.messages if m["to"] == me.phone]
    assert len(texts) == 2, texts  # the welcome and the real credit
    assert not any(FORGED_AMOUNT in text or "987,654.32" in text for text in texts)

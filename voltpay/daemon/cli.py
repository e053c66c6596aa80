"""The `voltpay` command: run, migrate, user add, aws bootstrap."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Sequence

from voltpay import __version__
from voltpay.config import ConfigurationError, Settings, load_settings
from voltpay.domain.errors import UsernameTaken
from voltpay.observability.logging import configure_logging, register_secret

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78
log = logging.getLogger("voltpay")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voltpay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voltpay {__version__}")
    parser.add_argument("--config", help="a TOML settings file (or VOLTPAY_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the daemon in the foreground")
    commands.add_parser("migrate", help="bring the database schema up to date")
    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", required=True
    )
    add = user.add_parser("add", help="create a user (and their wallet)")
    add.add_argument("username")
    add.add_argument("--phone", required=True, help="E.164, e.g. +2348012345678")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.add_argument(
        "--role",
        choices=("customer", "operator"),
        default="customer",
        help="operator: may credit any wallet and reverse credits (the API never grants it)",
    )
    grant = user.add_parser("grant", help="give an existing user a role")
    grant.add_argument("username")
    grant.add_argument("--role", choices=("customer", "operator"), required=True)
    aws = commands.add_parser("aws", help="SNS/SQS resources").add_subparsers(
        dest="aws_command", required=True
    )
    aws.add_parser("bootstrap", help="create the topic, queues and subscription")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    register_secret(settings.twilio.auth_token.get_secret_value())
    register_secret(settings.aws.secret_access_key.get_secret_value())
    register_secret(settings.funding.secret_key.get_secret_value())
    register_secret(settings.events.signing_key.get_secret_value())
    configure_logging(format=settings.log.format, level=settings.log.level)
    return settings


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _migrate(settings: Settings) -> int:
    from voltpay.models.database import apply_migrations

    await apply_migrations(settings.database.url)
    print("database is up to date")
    return EXIT_OK


async def _add_user(settings: Settings, args: argparse.Namespace) -> int:
    from voltpay.domain import passwords
    from voltpay.http import auth
    from voltpay.http.bodies import validate
    from voltpay.http.problems import Problem
    from voltpay.http.schemas import RegisterRequest
    from voltpay.models import users
    from voltpay.models.database import close_database, open_database

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        print("voltpay: no terminal to ask for the password: use --password-stdin", file=sys.stderr)
        return 2
    else:
        try:
            password = getpass.getpass("password: ")
        except EOFError:
            print("voltpay: no password given", file=sys.stderr)
            return 2
    try:
        body = validate(
            RegisterRequest,
            {"username": args.username, "password": password, "phoneNumber": args.phone},
        )
    except Problem as problem:
        print(f"voltpay: {problem.detail}", file=sys.stderr)
        return 2
    refused = passwords.refusal(body.password, body.username)
    if refused is not None:
        print(f"voltpay: {refused}", file=sys.stderr)
        return 2
    await open_database(settings.database.url)
    try:
        user, wallet, _ = await users.create_user(
            username=body.username,
            password_hash=await auth.hash_password(body.password),
            phone_number=body.phone_number,
            currency=settings.limits.currency,
            role=args.role,
        )
    except UsernameTaken:
        print(f"voltpay: username {body.username!r} is taken", file=sys.stderr)
        return 2
    finally:
        await close_database()
    print(f"created user {user.username} ({user.id}) with wallet {wallet.id}, role {args.role}")
    return EXIT_OK


async def _grant(settings: Settings, args: argparse.Namespace) -> int:
    from voltpay.models import users
    from voltpay.models.database import close_database, open_database

    await open_database(settings.database.url)
    try:
        found = await users.grant_role(args.username, args.role)
    finally:
        await close_database()
    if not found:
        print(f"voltpay: no user {args.username!r}", file=sys.stderr)
        return 2
    print(f"{args.username} is now a {args.role}")
    return EXIT_OK


async def _bootstrap(settings: Settings) -> int:
    from voltpay.bridges.aws import AwsClients
    from voltpay.bridges.provisioning import provision

    if settings.aws.uses_embedded_endpoint:
        print(
            "voltpay: VOLTPAY_AWS__ENDPOINT_URL is empty: the embedded endpoint is provisioned "
            "at every start; set an endpoint (or VOLTPAY_AWS__EMBEDDED=false for AWS)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    async with await AwsClients.from_settings(settings.aws) as clients:
        made = await provision(clients, settings.aws)
    print(f"VOLTPAY_AWS__TOPIC_ARN={made.topic_arn}")
    print(f"VOLTPAY_AWS__QUEUE_URL={made.queue_url}")
    print(f"VOLTPAY_AWS__DEAD_LETTER_QUEUE_URL={made.dead_letter_queue_url}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigurationError as exc:
        print(f"voltpay: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "run":
            from voltpay.daemon.runtime import serve

            _use_uvloop()
            return asyncio.run(serve(settings))
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "user" and args.user_command == "grant":
            return asyncio.run(_grant(settings, args))
        if args.command == "user":
            return asyncio.run(_add_user(settings, args))
        return asyncio.run(_bootstrap(settings))
    except KeyboardInterrupt:
        return EXIT_OK
    except ConfigurationError as exc:  # a check that needs more than the settings
        print(f"voltpay: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        if not _is_outside_failure(exc):
            log.exception("voltpay %s failed", args.command)
            return EXIT_FAILURE
        # Something voltpay depends on is missing or refuses: one line, the
        # traceback only at DEBUG.
        print(f"voltpay: cannot {args.command}: {_one_line(exc)}", file=sys.stderr)
        log.debug("voltpay %s failed", args.command, exc_info=exc)
        return EXIT_FAILURE
    finally:
        logging.shutdown()


def _is_outside_failure(exc: BaseException) -> bool:
    """A database, port, address or SNS/SQS endpoint that cannot be used,
    as opposed to a fault of voltpay's own."""
    import sqlite3

    import asyncpg  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError
    from tortoise.exceptions import DBConnectionError

    from voltpay.models.database import DatabaseUnusable

    outside = (
        OSError,  # refused, unreachable, timed out, address in use, no such host
        DatabaseUnusable,
        DBConnectionError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        sqlite3.Error,
        BotoCoreError,
        ClientError,
    )
    return isinstance(exc, outside)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, TimeoutError) and not text:
        text = "no answer in time"
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())

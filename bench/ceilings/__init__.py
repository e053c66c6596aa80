"""What voltpay is measured against: the least code that does the same work.

* ``framework``: a bare aiohttp app answering a constant JSON body;
* ``database``: the pay transaction in raw asyncpg / aiosqlite SQL;
* ``pipeline``: raw aioboto3 PublishBatch → ReceiveMessage → DeleteMessageBatch
  (and voltpay's own SNS/SQS bridges) against an endpoint.

And a peer, not a ceiling: ``fastapi_peer``, the pay transaction as a new user
writes it with FastAPI and SQLAlchemy 2 async, on PostgreSQL.

Each runs as its own process: ``python -m bench.ceilings.<name> --help``.
"""

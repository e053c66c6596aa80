"""voltpay's benchmark harness: ``python -m bench`` (or ``make bench``).

It starts voltpay (``voltpay run`` as a subprocess) on SQLite and on PostgreSQL,
the ceilings written for the bench only (``bench/ceilings``), drives HTTP load
with wrk from a separate process, measures the event pipeline, and writes
``bench/results/<date>-<host>.md`` and ``bench/results/latest.json``.
"""

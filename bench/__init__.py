"""The purchase benchmark: committed purchases under gunicorn against a bare reference endpoint.

`make bench` (that is, `python -m bench`) runs it on a fresh SQLite file and on a throwaway, durable
PostgreSQL 15, and prints purchases/s, p50 and p99 next to the reference's. docs/performance.md says what is
measured and records the latest figures.

    __main__.py the command: both databases, PostgreSQL through .ci/with-postgres, one table at the end
    runner.py   one database: seed it, serve it, load both endpoints, check the ledger
    seed.py     a fresh, migrated database with one program, an API key and 1,000 enrolled cards
    server.py   gunicorn serving wsgi:app on 127.0.0.1, stopped whatever happens
    load.py     the load generator: closed-loop HTTP/1.1 clients spread over a few processes
    report.py   percentiles, the results table and the targets
"""

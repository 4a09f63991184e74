"""The real services the tests run against, with fallbacks for bare machines.

Redis: the shared one on 127.0.0.1:6379 if it answers, else an embedded redis-server.
PostgreSQL: a fresh database on 127.0.0.1:5432 if it answers, else those tests skip.
Each test session uses its own queue and its own databases, and never stops a shared
service.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis
from psycopg import sql

SHARED_REDIS = os.environ.get("EXPLAINQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN = os.environ.get(
    "EXPLAINQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def shared_redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def postgres_available() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database for this session; dropped afterwards."""
    name = f"explainq_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = psycopg.conninfo.conninfo_to_dict(POSTGRES_ADMIN)
    user = base.get("user", "postgres")
    host, port = base.get("host", "127.0.0.1"), base.get("port", "5432")
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        # FORCE ends the connections that workers or pools still hold.
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

"""The machine's Redis (127.0.0.1:6379) for the tests that need one: a database number of the
test suite's own, so that it never touches anyone else's keys. CI sets AUTOBOTS_REQUIRE_REDIS=1,
and then a missing Redis fails the test instead of skipping it."""

from __future__ import annotations

import os

import pytest
import redis

# Redis database numbers the tests own (of the default 16); the server processes under test
# are pointed at them by URL.
RATE_LIMIT_DB = 11
HOST = os.environ.get("AUTOBOTS_TEST_REDIS_HOST", "127.0.0.1")


def redis_url(db: int) -> str:
    """The URL of test database `db`, after checking that Redis answers."""
    url = f"redis://{HOST}:6379/{db}"
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("AUTOBOTS_REQUIRE_REDIS") == "1":
            pytest.fail(f"AUTOBOTS_REQUIRE_REDIS=1 but Redis is not reachable at {url}: {exc}")
        pytest.skip(f"no Redis at {url}")
    return url

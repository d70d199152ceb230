"""The retry schedule: exponential backoff with jitter, Retry-After honoured in both its forms."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from offload.errors import AuthError, ConnectTimeout, RateLimited, ServerError
from offload.providers import RetryPolicy
from offload.providers.streaming import retry_after_seconds, retry_delay

POLICY = RetryPolicy(attempts=4, base_delay=0.5, max_delay=3.0, max_retry_after=30.0)


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half():
    error = ServerError("p", 502)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0)]:
        delays = {retry_delay(error, attempt, POLICY) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, so clients that failed together do not retry together
    capped = RetryPolicy(attempts=10, base_delay=0.5, max_delay=3.0)
    assert all(retry_delay(error, 8, capped) <= 3.0 for _ in range(20))


def test_no_retry_after_the_last_attempt_or_for_errors_that_would_fail_again():
    assert retry_delay(ConnectTimeout("h", 1.0), 3, POLICY) is None
    assert retry_delay(AuthError("p", 401), 0, POLICY) is None


def test_retry_after_replaces_the_backoff_unless_it_is_too_long():
    assert retry_delay(RateLimited("p", 2.5), 0, POLICY) == 2.5
    assert retry_delay(ServerError("p", 503, retry_after=4.0), 1, POLICY) == 4.0
    assert retry_delay(RateLimited("p", 31.0), 0, POLICY) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "7"}, 7.0), ({"retry-after": "1.5"}, 1.5), ({"retry-after-ms": "250"}, 0.25),
     ({"retry-after": "-3"}, 0.0), ({"retry-after": "soon"}, None), ({}, None)],
)  # fmt: skip
def test_retry_after_header_forms(headers, expected):
    assert retry_after_seconds(httpx.Headers(headers)) == expected


def test_retry_after_as_an_http_date():
    seconds = retry_after_seconds(httpx.Headers({"retry-after": formatdate(time.time() + 20, usegmt=True)}))
    assert 18 <= seconds <= 21

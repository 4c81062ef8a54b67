"""A database password given in the URL's query (`?password=...`, which libpq accepts) is hidden
like one in the user-info: in the URL shown in errors and in the driver's own error text."""

from __future__ import annotations

import pytest

from host.db_backends import PostgresBackend
from host.policy.config import redact_uri

URLS = [
    "postgresql://app@127.0.0.1:1/app?password=S3CRETpw",
    "postgresql://app:S3CRETpw@127.0.0.1:1/app",
    "postgresql://app@127.0.0.1:1/app?sslmode=disable&password=S3CRETpw#x",
    "redis://:S3CRETpw@127.0.0.1:6379/0",
]


@pytest.mark.parametrize("url", URLS)
def test_the_password_is_hidden_wherever_the_url_carries_it(url):
    shown = redact_uri(url)
    assert "S3CRETpw" not in shown and "127.0.0.1" in shown
    if url.startswith("postgresql"):
        backend = PostgresBackend(url, statement_timeout=1)
        assert "S3CRETpw" not in backend.scrub(f'connection to "{url}" failed: password S3CRETpw rejected')

"""The OpenSearch client every part of fashion-rerank uses, built from `OpenSearchSettings`."""

from __future__ import annotations

from opensearchpy import OpenSearch

from fashion_rerank.settings import OpenSearchSettings


def make_client(settings: OpenSearchSettings | None = None, **overrides) -> OpenSearch:
    """An opensearch-py client for `OPENSEARCH_URL` with auth, TLS verification/CA and an explicit timeout.

    `overrides` are passed to `OpenSearch(...)` (e.g. `max_retries=0`). No connection is made here.
    """
    s = settings or OpenSearchSettings()
    kwargs = dict(
        hosts=[s.url],
        timeout=s.timeout_s,
        verify_certs=s.verify_certs if s.url.startswith("https") else False,
        ssl_show_warn=False,
        max_retries=2,
        retry_on_timeout=False,
    )
    if s.ca_certs:
        kwargs["ca_certs"] = s.ca_certs
    if s.user:
        kwargs["http_auth"] = (s.user, s.password.get_secret_value() if s.password else "")
    kwargs.update(overrides)
    return OpenSearch(**kwargs)

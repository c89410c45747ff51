"""The OpenSearch client every part of fashion-rerank uses, built from `OpenSearchSettings`.

A cluster closed to strangers (the security plugin: HTTPS and basic auth) needs `OPENSEARCH_URL=https://...`,
`OPENSEARCH_USER` / `OPENSEARCH_PASSWORD` and, for a private CA, `OPENSEARCH_CA_CERTS` (a PEM bundle);
`OPENSEARCH_VERIFY_CERTS=false` turns verification off (development only). `explain_error` turns the
client's auth and certificate failures into one actionable line; the password never appears in it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from opensearchpy import OpenSearch
from opensearchpy import exceptions as ose

from fashion_rerank.settings import OpenSearchSettings

#: JSON fields whose values opensearch-py's request logging must not show (connector credentials, passwords).
_SECRET_FIELDS = re.compile(
    r'("(?:api_key|password|secret|secret_key|access_key|session_token|token|authorization)"\s*:\s*")(?:[^"\\]|\\.)*(")',
    re.IGNORECASE,
)


class RedactSecrets(logging.Filter):
    """Masks the values of secret-looking JSON fields (`_SECRET_FIELDS`) in a log record's message.

    opensearch-py logs every request body at DEBUG (loggers `opensearch` and `opensearchpy.trace`); the
    ml-commons connector that `install-pipeline` creates carries the sidecar's API key in its body, and the
    security plugin's user API carries passwords. Installed on those two loggers when this module loads.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        redacted = _SECRET_FIELDS.sub(r"\1***\2", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


for _name in ("opensearch", "opensearchpy.trace"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactSecrets) for f in _logger.filters):
        _logger.addFilter(RedactSecrets())


def make_client(settings: OpenSearchSettings | None = None, **overrides) -> OpenSearch:
    """An opensearch-py client for `OPENSEARCH_URL` with auth, TLS verification/CA and an explicit timeout.

    `OPENSEARCH_URL` may list several nodes of one cluster, comma-separated (`http://os-1:9200,http://os-2:9200`):
    opensearch-py then spreads requests over them (round robin) and, when one does not answer, marks it dead
    for a while and retries the request on another (up to `max_retries` times), so losing one node costs no
    request (tests/integration/test_cluster.py).
    Keeps up to `OPENSEARCH_POOL_MAXSIZE` connections per node open (a thread-safe urllib3 pool), so concurrent
    callers (the sidecar's Search handlers) reuse connections instead of opening one per request.
    `overrides` are passed to `OpenSearch(...)` (e.g. `max_retries=0`). No connection is made here.

    Raises:
        FileNotFoundError: `OPENSEARCH_CA_CERTS` names a file that does not exist.
    """
    s = settings or OpenSearchSettings()
    if s.ca_certs and not Path(s.ca_certs).is_file():
        raise FileNotFoundError(f"OPENSEARCH_CA_CERTS={s.ca_certs}: no such file (a PEM bundle of the cluster's CA)")
    kwargs = dict(
        hosts=hosts(s.url),
        timeout=s.timeout_s,
        verify_certs=s.verify_certs if s.url.startswith("https") else False,
        ssl_show_warn=False,
        max_retries=2,
        retry_on_timeout=False,
        pool_maxsize=s.pool_maxsize,
    )
    if s.ca_certs:
        kwargs["ca_certs"] = s.ca_certs
    if s.user:
        kwargs["http_auth"] = (s.user, s.password.get_secret_value() if s.password else "")
    kwargs.update(overrides)
    return OpenSearch(**kwargs)


def explain_error(exc: BaseException, settings: OpenSearchSettings | None = None) -> str | None:
    """One actionable line for an authentication, authorisation or certificate failure of `exc`, else None.

    401 -> wrong or missing OPENSEARCH_USER / OPENSEARCH_PASSWORD; 403 -> the user lacks a permission;
    a certificate verification failure -> set OPENSEARCH_CA_CERTS to the cluster's CA bundle; plain HTTP
    against an HTTPS port -> use https://. The password is never part of the line.
    """
    s = settings or OpenSearchSettings()
    who = f"user {s.user!r}" if s.user else "no user (OPENSEARCH_USER unset)"
    if isinstance(exc, ose.AuthenticationException) or getattr(exc, "status_code", None) == 401:
        return (
            f"OpenSearch at {s.url} refused the credentials (401 Unauthorized, {who}): "
            "check OPENSEARCH_USER and OPENSEARCH_PASSWORD"
        )
    if isinstance(exc, ose.AuthorizationException) or getattr(exc, "status_code", None) == 403:
        return f"OpenSearch at {s.url} denied {who} a permission this needs (403 Forbidden): {getattr(exc, 'error', exc)}"
    text = str(exc)
    if isinstance(exc, ose.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        ca = f"the CA bundle {s.ca_certs} does not vouch for it" if s.ca_certs else "OPENSEARCH_CA_CERTS is unset"
        return (
            f"cannot verify the TLS certificate of OpenSearch at {s.url} ({ca}): set OPENSEARCH_CA_CERTS to a PEM "
            "bundle of the CA that signed the cluster's certificate"
        )
    if (
        isinstance(exc, ose.ConnectionError)
        and s.url.startswith("http://")
        and ("RemoteDisconnected" in text or "Connection aborted" in text or "BadStatusLine" in text)
    ):
        return f"OpenSearch at {s.url} closed the connection: if the cluster serves HTTPS, use OPENSEARCH_URL=https://..."
    return None


def hosts(url: str) -> list[str]:
    """The node URLs in `OPENSEARCH_URL`: one URL, or several separated by commas (blanks ignored).

    Raises:
        ValueError: no URL at all.
    """
    out = [u.strip() for u in url.split(",") if u.strip()]
    if not out:
        raise ValueError(f"OPENSEARCH_URL names no node: {url!r}")
    return out

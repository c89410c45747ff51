"""Bearer-token auth of the HTTP front (`FR_SERVE_HTTP_API_KEY`).

With a key set, every endpoint but `/health` needs `Authorization: Bearer <key>` (scheme case-insensitive,
token compared in constant time with `hmac.compare_digest`); otherwise it answers 401 with
`WWW-Authenticate: Bearer`. Without a key (unset or empty) nothing is checked.
"""

from __future__ import annotations

import hmac
from typing import Any, Mapping

from reranker.http.errors import HttpError

UNAUTHORIZED = "missing or invalid bearer token (Authorization: Bearer <FR_SERVE_HTTP_API_KEY>)"


def secret_value(value: Any) -> str | None:
    """The key from a setting: a pydantic `SecretStr`, a string or None; "" is None (no auth)."""
    if value is None:
        return None
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value) or None


class BearerAuth:
    """Checks the `Authorization` header against `api_key` (None: every request passes).

    Args:
        api_key: the expected token, or None for no auth.
    """

    def __init__(self, api_key: str | None):
        self._key = api_key

    @classmethod
    def from_settings(cls, settings: Any) -> "BearerAuth":
        """From `settings.http_api_key` (missing attribute or None settings: no auth)."""
        return cls(secret_value(getattr(settings, "http_api_key", None)))

    def check(self, headers: Mapping[str, str]) -> None:
        """Raises HttpError(401, error_type "unauthorized") unless `headers` carry the bearer token."""
        if self._key is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key.encode()):
            raise HttpError(401, UNAUTHORIZED, "unauthorized")

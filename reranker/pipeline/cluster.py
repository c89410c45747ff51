"""Small cluster calls and reports shared by install and uninstall: requests, effective settings, lookups by name."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from opensearchpy.exceptions import NotFoundError, TransportError

from reranker.pipeline.options import InstallError


@dataclass
class Step:
    """One reported action: `what` (object), `name`, `status` (created/updated/set/already/removed/...), detail."""

    what: str
    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"  {self.what:<18} {self.name:<52} {self.status}{(' - ' + self.detail) if self.detail else ''}"


@dataclass
class InstallReport:
    """Result of `install_pipeline`: the ids created or found and every step taken."""

    pipeline: str
    connector_id: str = ""
    model_group_id: str = ""
    model_id: str = ""
    steps: list[Step] = field(default_factory=list)
    smoke_scores: list[float] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything in the cluster was created, updated or set."""
        return any(s.status not in ("already", "already set", "ok", "skipped", "passed") for s in self.steps)


def _req(client, method: str, path: str, body: dict | None = None, params: dict | None = None, ok404: bool = False):
    """`client.transport.perform_request`, returning None for 404 when `ok404`, else raising InstallError."""

    try:
        return client.transport.perform_request(method, path, params=params, body=body)
    except NotFoundError:
        if ok404:
            return None
        raise InstallError(f"{method} {path}: not found") from None
    except TransportError as exc:
        info = exc.info if isinstance(exc.info, (dict, str)) else ""
        reason = info.get("error", info) if isinstance(info, dict) else info
        if isinstance(reason, dict):
            reason = reason.get("reason") or json.dumps(reason)[:500]
        raise InstallError(f"{method} {path} failed ({exc.status_code}): {reason or exc.error}") from exc


def _flat_settings(client) -> dict[str, dict[str, Any]]:
    """{'persistent': {...}, 'transient': {...}, 'defaults': {...}} with flat keys."""
    return _req(client, "GET", "/_cluster/settings", params={"include_defaults": "true", "flat_settings": "true"})


def _effective(flat: dict, key: str) -> Any:
    """Value in effect: transient over persistent over default (None if unknown)."""
    for level in ("transient", "persistent", "defaults"):
        if key in flat.get(level, {}):
            return flat[level][key]
    return None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _truthy(value: Any) -> bool:
    return str(value).lower() == "true"


def _is_private_host(host: str) -> bool:
    """True for private/loopback/link-local addresses, and for names this machine cannot resolve."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if addr.is_private or addr.is_loopback or addr.is_link_local:
            return True
    return False


def _search_by_name(client, kind: str, name: str) -> list[dict]:
    """ml-commons objects (`connectors`, `models`, `model_groups`) with exactly this name, oldest first."""
    body = {
        "query": {"term": {"name.keyword": name}},
        "size": 100,
        "sort": [{"created_time": {"order": "asc", "unmapped_type": "long"}}],
    }
    resp = _req(client, "POST", f"/_plugins/_ml/{kind}/_search", body=body, ok404=True)
    if not resp:
        return []
    hits = resp.get("hits", {}).get("hits", [])
    out = []
    for h in hits:
        src = dict(h.get("_source", {}))
        if src.get("name") != name:
            continue
        if kind == "models" and "chunk_number" in src:
            continue
        src["_id"] = h["_id"]
        out.append(src)
    return out


def _java_regex_matches(pattern: str, url: str) -> bool:
    """Whether a `trusted_connector_endpoints_regex` entry fully matches `url` (Java `matches()`)."""
    try:
        return re.fullmatch(pattern, url) is not None
    except re.error:
        return False

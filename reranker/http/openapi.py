"""The HTTP front's OpenAPI document, as served at `GET /openapi.json`.

`python -m reranker.http.openapi [FILE]` writes it (default: stdout); `docs/openapi.json` is made this way
and a test keeps it equal to what a running front serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from reranker.http.app import create_app


def openapi_document() -> dict:
    """The OpenAPI 3 document of the HTTP front (independent of the served model and the settings' values)."""
    return create_app(core=None, settings=None, metrics=None).openapi()


def render(doc: dict) -> str:
    """The document as the stable text kept in docs/openapi.json (sorted keys, 2-space indent, final newline)."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document to argv[0] or stdout; returns 0."""
    argv = sys.argv[1:] if argv is None else argv
    text = render(openapi_document())
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

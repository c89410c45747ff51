"""The product schema shared by every part of fashion-rerank, and the one text a product is shown as.

`rerank_text` is the single source of the product text: the indexer stores it in the `rerank_text`
field, the sidecar scores it, the labeling job shows it to the judge and the trainer trains on it, so
train, eval and serve never drift. OpenSearch's rerank processor concatenates `document_fields`
without separators, which is why the stored field already carries visible " | " separators.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Attribute keys of the schema, in the order they appear in the product text.
ATTRIBUTE_FIELDS: tuple[str, ...] = ("product_type", "colour", "gender", "usage", "season", "category", "brand")

#: Fields in `rerank_text`, in order, with a per-field budget in whitespace-separated words.
#: Budgets keep a pair within the cross-encoder's 128 tokens: ~24 + 6*4 + 40 words ≈ 100 wordpieces
#: for typical titles and descriptions (see docs/reference/cpu-measurements.md#levers: 64-128 tokens).
TEXT_FIELDS: tuple[tuple[str, int], ...] = (
    ("title", 24),
    ("product_type", 4),
    ("colour", 4),
    ("gender", 3),
    ("usage", 3),
    ("season", 2),
    ("brand", 4),
    ("description", 40),
)

SEPARATOR = " | "


@dataclass(frozen=True)
class Product:
    """One catalog product.

    Attributes:
        id: the catalog's product id as a string (OpenSearch `_id`).
        title: display name; never empty for an indexed product.
        description: free text, may be empty.
        attributes: subset of ATTRIBUTE_FIELDS -> non-empty string (gender, category, product_type, colour,
            usage, season, brand, where the catalog knows them).
    """

    id: str
    title: str
    description: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        """Value of `title`, `description` or an attribute; "" when unknown."""
        if name in ("id", "title", "description"):
            return getattr(self, name)
        return self.attributes.get(name, "")

    def to_source(self) -> dict[str, Any]:
        """The OpenSearch document source (without the vector)."""
        src: dict[str, Any] = {"product_id": self.id, "title": self.title, "description": self.description}
        src.update({k: v for k, v in self.attributes.items() if v})
        src["rerank_text"] = rerank_text(self)
        return src

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], id: str = "") -> "Product":
        """Build a product from a flat mapping (an OpenSearch `_source` or RPC product fields).

        Unknown keys are ignored; values are converted to stripped strings, None/NaN to "".
        """

        def clean(v: Any) -> str:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            return " ".join(str(v).split())

        attrs = {k: clean(fields.get(k)) for k in ATTRIBUTE_FIELDS if clean(fields.get(k))}
        return cls(
            id=clean(fields.get("product_id", id)) or id,
            title=clean(fields.get("title")),
            description=clean(fields.get("description")),
            attributes=attrs,
        )


def _budget(text: str, words: int) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def rerank_text(product: Product) -> str:
    """The text a product is shown as: "title | type | colour | gender | usage | season | brand | description".

    Empty fields are left out; each field is cut to its word budget (TEXT_FIELDS) with "…" marking a
    cut; a field whose value is already in the title (e.g. the brand) is not repeated. Deterministic:
    the same product always gives the same string.
    """
    out: list[str] = []
    title_l = product.title.lower()
    for name, words in TEXT_FIELDS:
        value = product.get(name)
        if not value:
            continue
        if name not in ("title", "description") and name == "brand" and value.lower() in title_l:
            continue
        out.append(_budget(value, words))
    return SEPARATOR.join(out)


def text_hash(text: str) -> str:
    """A short stable hash of a text (sha1, 16 hex chars): embedding cache and judgment keys."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]

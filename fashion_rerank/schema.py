"""How a products index maps onto our product schema: ours by default, a team's own index by configuration.

An index built by `fashion-rerank index build` has the vector in `embedding`, the product text in
`rerank_text` and our attribute names. A team's existing catalog index has its own mapping: another vector
field (and dimension, from whatever bi-encoder they used), its own text fields (`name`, `desc`, `color` ...),
maybe its own id field. `IndexSchema` says where each of our fields lives in their documents, so Search (and
the candidate pools of the labeling job) read their index unchanged, and the cross-encoder still reads the
one product text, `fashion_rerank.product.rerank_text`, built from their fields through the map.

Configured with `FR_INDEX_*` settings (`fashion_rerank.settings.IndexSettings`): `vector_field`,
`id_field`, `text_field`, `field_map` (e.g. `title=name,description=desc,colour=color,product_type=category`);
dotted names reach into objects (`attributes.color`). The bi-encoder that made their vectors is
`FR_MODEL_BI_ENCODER` (a sentence-transformers model id or folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from fashion_rerank.product import ATTRIBUTE_FIELDS, Product, rerank_text

#: Our fields a field map may name: the product text fields and the attributes.
SCHEMA_FIELDS: tuple[str, ...] = ("product_id", "title", "description", *ATTRIBUTE_FIELDS)


def parse_field_map(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """`"title=name,colour=color"` (or a mapping) -> {"title": "name", "colour": "color"}.

    Raises:
        ValueError: an item without "=", an empty side, or a key that is not one of SCHEMA_FIELDS.
    """
    if not spec:
        return {}
    items = (
        spec.items()
        if isinstance(spec, Mapping)
        else (
            (part.partition("=")[0], part.partition("=")[2]) if "=" in part else (part, "")
            for part in str(spec).split(",")
            if part.strip()
        )
    )
    out: dict[str, str] = {}
    for ours, theirs in items:
        ours, theirs = str(ours).strip(), str(theirs).strip()
        if not ours or not theirs:
            raise ValueError(f"field map item {ours}={theirs!r} needs both sides (ours=theirs)")
        if ours not in SCHEMA_FIELDS:
            raise ValueError(f"field map: {ours!r} is not one of our fields ({', '.join(SCHEMA_FIELDS)})")
        out[ours] = theirs
    return out


def lookup(source: Mapping[str, Any], path: str) -> Any:
    """Value at `path` in a `_source`: a plain key first, then a dotted path into objects; None when absent."""
    if path in source:
        return source[path]
    cur: Any = source
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


@dataclass(frozen=True)
class IndexSchema:
    """Where our fields live in an index's documents.

    Attributes:
        vector_field: the knn_vector field the query vector is compared with.
        id_field: source field holding the product id; None: the document `_id`.
        text_field: a stored field holding the product text ready for the cross-encoder (ours: `rerank_text`);
            None, or absent from a document: the text is built with `rerank_text` from the mapped fields.
        field_map: our field -> their field (unmapped fields are read under our own name).
        hash_field: a keyword field (doc values) whose value changes whenever anything in the document changes
            and identifies it (ours: `source_hash`, a hash of the product id and every indexed field, written
            by the indexer). Search reads it instead of `_source` and keeps the documents it has seen
            (`reranker.documents`); None: Search always reads `_source`. A document written without the field
            makes Search read `_source` for that index again.
    """

    vector_field: str = "embedding"
    id_field: str | None = None
    text_field: str | None = "rerank_text"
    field_map: Mapping[str, str] = field(default_factory=dict)
    hash_field: str | None = "source_hash"

    def field(self, ours: str) -> str:
        """Their name of our field `ours` (e.g. a filter attribute)."""
        return self.field_map.get(ours, ours)

    def product_id(self, doc_id: str, source: Mapping[str, Any]) -> str:
        """The product id of a hit: `id_field` from its source when set and present, else the document `_id`."""
        if self.id_field:
            value = lookup(source, self.id_field)
            if value not in (None, ""):
                return str(value)
        return doc_id

    def product(self, doc_id: str, source: Mapping[str, Any]) -> Product:
        """Our `Product` view of one document `_source` (mapped fields; lists joined with spaces)."""
        fields: dict[str, Any] = {}
        for ours in SCHEMA_FIELDS:
            value = lookup(source, self.field(ours))
            if isinstance(value, (list, tuple)):
                value = " ".join(str(v) for v in value if v is not None)
            if value is not None:
                fields[ours] = value
        pid = self.product_id(doc_id, source)
        fields["product_id"] = pid
        return Product.from_fields(fields, id=pid)

    def text(self, doc_id: str, source: Mapping[str, Any]) -> str:
        """The product text the cross-encoder reads: the stored `text_field`, else `rerank_text` of the mapped product."""
        if self.text_field:
            stored = lookup(source, self.text_field)
            if isinstance(stored, str) and stored.strip():
                return stored
        return rerank_text(self.product(doc_id, source))

    def source_excludes(self) -> list[str]:
        """`_source` fields never to fetch (the vector: large and useless to the caller)."""
        return [self.vector_field]


#: The schema of indices built by `fashion-rerank index build`.
DEFAULT_SCHEMA = IndexSchema()


def schema_from_settings(settings) -> IndexSchema:
    """The IndexSchema of `fashion_rerank.settings.IndexSettings` (`vector_field`, `id_field`, `text_field`,
    `field_map`, `hash_field`). Raises ValueError for a bad field map."""
    return IndexSchema(
        vector_field=settings.vector_field,
        id_field=settings.id_field or None,
        text_field=settings.text_field or None,
        field_map=parse_field_map(settings.field_map),
        hash_field=settings.hash_field or None,
    )

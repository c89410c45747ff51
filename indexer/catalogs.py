"""Catalog readers: every catalog becomes a stream of `Product`s plus a list of skipped rows.

Readers:
- `myntra`: the bundled Myntra "Fashion Product Images" styles.csv (44,446 data lines, see
  indexer/data/PROVENANCE.md). 22 lines carry an unquoted comma inside `productDisplayName`; since
  that is the last column, the extra fields are joined back into the name.
- `hm`: the H&M articles file (Kaggle terms: never bundled). Pass its path (`.parquet` or `.csv[.gz]`).
- generic CSV / JSONL / Parquet with a column mapping (`id=ProductID,title=ProductName,...`).

Bad rows never stop a read: a row with no id, an empty title or a duplicate id is recorded as
`Skipped(row, reason)` and the rest goes on.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from fashion_rerank.product import ATTRIBUTE_FIELDS, Product

BUNDLED_MYNTRA = "myntra_styles.csv.gz"
GENDER_WORDS = ("Men", "Women", "Boys", "Girls", "Unisex", "Kids")


@dataclass(frozen=True)
class Skipped:
    """A row that was not indexed: 1-based data row number (or product id), and why."""

    row: int | str
    reason: str


@dataclass
class CatalogRead:
    """Products read from a catalog and the rows skipped on the way (filled while iterating)."""

    products: Iterator[Product]
    skipped: list[Skipped] = field(default_factory=list)
    read: int = 0


def _clean(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return " ".join(str(v).split())


def _validated(rows: Iterable[tuple[int, Product | Skipped]], out: CatalogRead, limit: int | None) -> Iterator[Product]:
    seen: set[str] = set()
    emitted = 0
    for rownum, item in rows:
        if limit is not None and emitted >= limit:
            return
        out.read += 1
        if isinstance(item, Skipped):
            out.skipped.append(item)
            continue
        if not item.id:
            out.skipped.append(Skipped(rownum, "missing id"))
        elif not item.title:
            out.skipped.append(Skipped(rownum, "empty title"))
        elif item.id in seen:
            out.skipped.append(Skipped(rownum, f"duplicate id {item.id}"))
        else:
            seen.add(item.id)
            emitted += 1
            yield item


# --------------------------------------------------------------------------------------------- Myntra


def myntra_brand(title: str) -> str:
    """The brand of a Myntra display name: the words before the first gender word ("Peter England Men
    Party Blue Jeans" -> "Peter England"); "" when no gender word follows the first word."""
    words = title.split()
    for i, w in enumerate(words[1:], start=1):
        if w in GENDER_WORDS:
            return " ".join(words[:i])
    return ""


def _myntra_rows(lines: Iterable[str]) -> Iterator[tuple[int, Product | Skipped]]:
    reader = csv.reader(lines)
    header = next(reader)
    width = len(header)
    for rownum, fields in enumerate(reader, start=1):
        if len(fields) < width:
            yield rownum, Skipped(rownum, f"{len(fields)} fields, expected {width}")
            continue
        if len(fields) > width:  # unquoted comma in the last column (productDisplayName)
            fields = fields[: width - 1] + [",".join(fields[width - 1 :])]
        rec = dict(zip(header, fields))
        title = _clean(rec.get("productDisplayName"))
        attrs = {
            "gender": _clean(rec.get("gender")),
            "category": _clean(rec.get("subCategory")) or _clean(rec.get("masterCategory")),
            "product_type": _clean(rec.get("articleType")),
            "colour": _clean(rec.get("baseColour")),
            "usage": _clean(rec.get("usage")),
            "season": _clean(rec.get("season")),
            "brand": myntra_brand(title),
        }
        yield rownum, Product(id=_clean(rec.get("id")), title=title, attributes={k: v for k, v in attrs.items() if v})


def read_myntra(path: str | Path | None = None, limit: int | None = None) -> CatalogRead:
    """Read the Myntra styles catalog (default: the bundled copy). Yields at most `limit` products."""
    if path is None:
        raw = resources.files("indexer").joinpath("data", BUNDLED_MYNTRA).read_bytes()
        text = io.StringIO(gzip.decompress(raw).decode("utf-8"))
    else:
        text = _open_text(Path(path))
    out = CatalogRead(products=iter(()))
    out.products = _validated(_myntra_rows(text), out, limit)
    return out


# ------------------------------------------------------------------------------------------------ H&M

_HM_GENDER = {"Ladieswear": "Women", "Divided": "Women", "Menswear": "Men", "Baby/Children": "Kids"}


def _hm_product(rec: Mapping[str, Any]) -> Product:
    aid = _clean(rec.get("article_id"))
    if aid.isdigit():
        aid = aid.zfill(10)
    attrs = {
        "gender": _HM_GENDER.get(_clean(rec.get("index_group_name")), ""),
        "category": _clean(rec.get("product_group_name")),
        "product_type": _clean(rec.get("product_type_name")),
        "colour": _clean(rec.get("colour_group_name")),
        "usage": _clean(rec.get("index_group_name")) if rec.get("index_group_name") == "Sport" else "",
        "brand": "H&M",
    }
    return Product(
        id=aid,
        title=_clean(rec.get("prod_name")),
        description=_clean(rec.get("detail_desc")),
        attributes={k: v for k, v in attrs.items() if v},
    )


def read_hm(path: str | Path, limit: int | None = None) -> CatalogRead:
    """Read the H&M articles file (Kaggle `articles.csv` or its Parquet conversion) from a user path.

    Raises FileNotFoundError with a hint when the path does not exist (the file is not bundled:
    Kaggle competition terms).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"H&M articles file not found at {path}; download articles.csv from the Kaggle competition "
            "'H&M Personalized Fashion Recommendations' (it is not bundled: Kaggle terms)"
        )
    return read_generic(path, mapping=None, limit=limit, to_product=_hm_product)


# -------------------------------------------------------------------------------------------- generic


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | Skipped]]:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        rownum = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for rec in batch.to_pylist():
                rownum += 1
                yield rownum, rec
    elif name.endswith((".jsonl", ".ndjson", ".json")):
        with _open_text(path) as fh:
            for rownum, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield rownum, Skipped(rownum, f"invalid JSON: {exc.msg}")
                    continue
                yield rownum, rec if isinstance(rec, dict) else Skipped(rownum, "not a JSON object")
    elif name.endswith((".csv", ".tsv")):
        with _open_text(path) as fh:
            reader = csv.DictReader(fh, delimiter="\t" if name.endswith(".tsv") else ",")
            for rownum, rec in enumerate(reader, start=1):
                if None in rec:  # more fields than the header
                    yield rownum, Skipped(rownum, f"{len(reader.fieldnames or [])}+ fields: extra values {rec[None]!r}")
                    continue
                yield rownum, rec
    else:
        raise ValueError(f"unsupported catalog format {path.name!r}: use .csv, .tsv, .jsonl or .parquet (optionally .gz)")


def parse_mapping(spec: str | None) -> dict[str, str]:
    """Parse `id=ProductID,title=ProductName,colour=PrimaryColor` into {schema field: column}.

    Schema fields: id, title, description and ATTRIBUTE_FIELDS. Raises ValueError naming a bad entry.
    """
    mapping: dict[str, str] = {}
    allowed = {"id", "title", "description", *ATTRIBUTE_FIELDS}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, col = part.partition("=")
        key = key.strip()
        if not sep or key not in allowed or not col.strip():
            raise ValueError(f"bad mapping entry {part!r}: expected FIELD=COLUMN with FIELD in {sorted(allowed)}")
        mapping[key] = col.strip()
    return mapping


def read_generic(
    path: str | Path,
    mapping: Mapping[str, str] | None,
    limit: int | None = None,
    to_product: Callable[[Mapping[str, Any]], Product] | None = None,
) -> CatalogRead:
    """Read CSV/TSV/JSONL/Parquet (optionally gzipped) with `mapping` {schema field: column}.

    Without a mapping the column names are taken to be the schema names (id, title, description,
    gender, colour, ...).
    """
    path = Path(path)
    mapping = dict(mapping or {})
    if to_product is None:

        def to_product(rec: Mapping[str, Any]) -> Product:
            get = lambda f: _clean(rec.get(mapping.get(f, f)))  # noqa: E731
            attrs = {k: get(k) for k in ATTRIBUTE_FIELDS if get(k)}
            return Product(id=get("id"), title=get("title"), description=get("description"), attributes=attrs)

    def rows() -> Iterator[tuple[int, Product | Skipped]]:
        for rownum, rec in _records(path):
            yield rownum, rec if isinstance(rec, Skipped) else to_product(rec)

    out = CatalogRead(products=iter(()))
    out.products = _validated(rows(), out, limit)
    return out


def open_catalog(spec: str, limit: int | None = None, mapping: str | None = None, hm_path: str | None = None) -> CatalogRead:
    """Open a catalog by CLI name: `myntra` (bundled), `hm` (needs `hm_path` or $FR_HM_ARTICLES), or a path.

    Raises FileNotFoundError / ValueError with a readable message for a missing file or bad format.
    """

    if spec == "myntra":
        return read_myntra(limit=limit)
    if spec == "hm":
        p = hm_path or os.environ.get("FR_HM_ARTICLES")
        if not p:
            raise FileNotFoundError("--catalog hm needs the articles file: pass --hm-path or set FR_HM_ARTICLES")
        return read_hm(p, limit=limit)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"catalog {spec!r} is neither 'myntra', 'hm' nor an existing file")
    if path.name.startswith("styles.csv"):
        return read_myntra(path, limit=limit)
    return read_generic(path, parse_mapping(mapping), limit=limit)

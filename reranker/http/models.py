"""Request and response bodies of the HTTP front, as pydantic v2 models (they make its OpenAPI document).

Requests are validated with the messages the front has always answered: each names the offending field
(`query: must not be empty`, `documents[3]: must be a string or {"text": ...}, got int`,
`documents[1].text: must be a string, got int`, `top_n: must be a positive integer, got 0`). Every field
has a *before* validator that checks the JSON value itself, so pydantic never coerces (`"3"` is not a
`top_n`, `1` is not `true`), and a missing required field reads as null, as it always did. `parse`
turns the first pydantic error (fields are checked in declaration order) into an `InvalidInputError`
with that message, which `reranker.status` answers with 400.

Nulls accepted on purpose: a null, `{}` or `{"text": null}` document and a null TEI text are scored as
the empty string; a null optional field takes its default.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.json_schema import models_json_schema

from reranker.errors import InvalidInputError

M = TypeVar("M", bound=BaseModel)

#: Where `openapi_schemas` puts the request models (FastAPI's components).
REF_TEMPLATE = "#/components/schemas/{model}"


# ------------------------------------------------------------------------------------ field checks


class FieldError(ValueError):
    """A field's value is wrong; `str(err)` is the message without the field's name.

    Args:
        message: e.g. "must be a string, got int".
        at: a path below the validated value, appended to the field's name (".text" for a document's text).
    """

    def __init__(self, message: str, at: str = ""):
        super().__init__(message)
        self.at = at


def _type(value: Any) -> str:
    return type(value).__name__


def _query(value: Any) -> str:
    if value is None:
        raise FieldError("required, must be a string")
    if not isinstance(value, str):
        raise FieldError(f"must be a string, got {_type(value)}")
    if not value.strip():
        raise FieldError("must not be empty")
    return value


def _non_empty_list(required: str) -> Callable[[Any], list]:
    """A check of a required, non-empty JSON array; `required` is the message for a missing/null one."""

    def check(value: Any) -> list:
        if value is None:
            raise FieldError(required)
        if not isinstance(value, list):
            raise FieldError(f"must be a list, got {_type(value)}")
        if not value:
            raise FieldError("must not be empty")
        return value

    return check


def _document(value: Any) -> Any:
    """One Cohere document: a string, a `{"text": string | null, ...}` object, or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        text = value.get("text")
        if text is not None and not isinstance(text, str):
            raise FieldError(f"must be a string, got {_type(text)}", at=".text")
        return value
    raise FieldError(f'must be a string or {{"text": ...}}, got {_type(value)}')


def _text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FieldError(f"must be a string, got {_type(value)}")
    return value


def _flag(default: bool) -> Callable[[Any], bool]:
    """A check of an optional JSON boolean; null is `default`."""

    def check(value: Any) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise FieldError(f"must be true or false, got {value!r}")
        return value

    return check


def _positive_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FieldError(f"must be a positive integer, got {value!r}")
    return value


def _optional_string(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FieldError(f"must be a string, got {_type(value)}")
    return value


def _direction(value: Any) -> str | None:
    if value is not None and value not in ("Left", "Right", "left", "right"):
        raise FieldError(f'must be "Left" or "Right", got {value!r}')
    return value


Query = Annotated[
    str, BeforeValidator(_query), Field(min_length=1, description="The search query; never truncated; must not be blank.")
]
PositiveInt = Annotated[int, Field(ge=1)]


class _Request(BaseModel):
    """Base of request bodies: unknown fields are ignored, a missing required field reads as null."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _missing_is_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            missing = {name: None for name, f in cls.model_fields.items() if f.is_required() and name not in data}
            if missing:
                data = {**data, **missing}
        return data


# ------------------------------------------------------------------------------------ Cohere shape


class DocumentObject(BaseModel):
    """A Cohere document given as an object; only `text` is read (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = Field(None, description='The document\'s text; missing or null is scored as "".')

    def as_text(self) -> str:
        return self.text or ""


Document = Annotated[str | DocumentObject | None, BeforeValidator(_document)]
Documents = Annotated[
    list[Document], BeforeValidator(_non_empty_list('required, must be a list of strings or {"text": ...} objects'))
]


class CohereRerankRequest(_Request):
    """Body of `POST /v1/rerank` and `/v2/rerank` (Cohere's rerank request)."""

    query: Query
    documents: Documents = Field(
        min_length=1,
        description='Texts to score: strings or {"text": ...} objects; null, {} and {"text": null} are scored '
        'as "". At most FR_SERVE_MAX_DOCUMENTS (else 413), each at most FR_SERVE_MAX_TEXT_CHARS characters.',
    )
    top_n: Annotated[PositiveInt | None, BeforeValidator(_positive_int)] = Field(
        None, description="Return only the best `top_n` results (default: all)."
    )
    max_tokens_per_doc: Annotated[PositiveInt | None, BeforeValidator(_positive_int)] = Field(
        None,
        description="Cut each document to about this many whitespace words before scoring (default: no cut; "
        "the model truncates each pair to its own max length anyway).",
    )
    return_documents: Annotated[bool, BeforeValidator(_flag(False))] = Field(
        False, description="Include each result's `document: {text}` (null: false)."
    )
    model: Annotated[str | None, BeforeValidator(_optional_string)] = Field(
        None, description="Accepted and ignored: the sidecar serves one model (named in the response's `meta`)."
    )

    def texts(self) -> list[str]:
        """The documents as texts, in input order (a null or text-less document is "")."""
        return [_as_text(d) for d in self.documents]


def _as_text(document: str | DocumentObject | None) -> str:
    if document is None:
        return ""
    return document if isinstance(document, str) else document.as_text()


class ResultDocument(BaseModel):
    """The scored document's text, as sent (after a null became "")."""

    text: str = Field(description="The document's text.")


class CohereResult(BaseModel):
    """One scored document."""

    index: int = Field(description="Position of the document in the request's `documents` (0-based).")
    relevance_score: float = Field(
        description="activation(logit) as the model declares it (in [0, 1] for a sigmoid model, the logit for an identity one), float32 precision; higher is more relevant."
    )
    document: ResultDocument | None = Field(None, description="Only with `return_documents: true`.")


class ApiVersion(BaseModel):
    version: str = Field(description='"1" for /v1/rerank, "2" for /v2/rerank.')


class BilledUnits(BaseModel):
    search_units: int = Field(description="Always 1 (Cohere's unit; nothing is billed).")


class CohereMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    model: str = Field(description="Name of the served cross-encoder (FR_MODEL_NAME).")
    model_version: str = Field(description="Registry version that scored this request.")


class CohereRerankResponse(BaseModel):
    """Answer of `POST /v1/rerank` / `/v2/rerank`: results best first (ties by input index), cut to `top_n`."""

    id: str = Field(description="A random UUID of this answer.")
    results: list[CohereResult]
    meta: CohereMeta


class CohereErrorBody(BaseModel):
    """Error answer of the Cohere endpoints (and of `/v1/models`)."""

    message: str = Field(description="What went wrong; a bad field is named first (`documents[3]: ...`).")


# --------------------------------------------------------------------------------------- TEI shape

Text = Annotated[str | None, BeforeValidator(_text)]
Texts = Annotated[list[Text], BeforeValidator(_non_empty_list("required, must be a list of strings"))]


class TeiRerankRequest(_Request):
    """Body of `POST /rerank` (text-embeddings-inference's rerank request)."""

    query: Query
    texts: Texts = Field(
        min_length=1,
        description='Texts to score (null is scored as ""). At most FR_SERVE_MAX_DOCUMENTS (else 413), each at '
        "most FR_SERVE_MAX_TEXT_CHARS characters.",
    )
    raw_scores: Annotated[bool, BeforeValidator(_flag(False))] = Field(
        False, description="Answer cross-encoder logits instead of the served scores, activation(logit) (null: false)."
    )
    return_text: Annotated[bool, BeforeValidator(_flag(False))] = Field(
        False, description="Include each result's `text` (null: false)."
    )
    truncate: Annotated[bool, BeforeValidator(_flag(False))] = Field(
        False,
        description="As TEI: false refuses a (query, text) pair longer than the model reads (413, validation); "
        "true cuts the text to fit.",
    )
    truncation_direction: Annotated[Literal["Left", "Right", "left", "right"] | None, BeforeValidator(_direction)] = Field(
        None, description='Which end of an over-long text is cut: "Right" (default) keeps its start, "Left" its end.'
    )

    def text_list(self) -> list[str]:
        """The texts in input order (null is "")."""
        return [t or "" for t in self.texts]

    @property
    def truncate_left(self) -> bool:
        return self.truncation_direction in ("Left", "left")


class TeiRank(BaseModel):
    """One scored text of the TEI answer (a bare JSON array of these, best first, ties by index)."""

    index: int = Field(description="Position of the text in the request's `texts` (0-based).")
    score: float = Field(
        description="Served score, activation(logit) as the model declares it (in [0, 1] for a sigmoid model), or the raw "
        "logit with `raw_scores: true`; float32 precision."
    )
    text: str | None = Field(None, description="Only with `return_text: true`.")


class TeiErrorBody(BaseModel):
    """Error answer of `POST /rerank`, as text-embeddings-inference answers."""

    error: str = Field(description="What went wrong; a bad field is named first (`texts[1]: ...`).")
    error_type: str = Field(
        description="validation, unauthorized, overloaded, unhealthy, timeout or backend (`reranker.status`)."
    )


# ------------------------------------------------------------------------------- health and models


class Health(BaseModel):
    """`GET /health`: `{status: "ok", model, model_version}` (200) or `{status: "no model loaded"}` (503)."""

    status: str
    model: str | None = Field(None, description="Name of the served cross-encoder (absent when none is loaded).")
    model_version: str | None = Field(None, description="Serving registry version (absent when none is loaded).")


class ModelCard(BaseModel):
    id: str = Field(description="Name of the served cross-encoder.")
    object: Literal["model"] = "model"
    version: str = Field(description="Serving registry version.")
    owned_by: str = "fashion-rerank"


class ModelList(BaseModel):
    """`GET /v1/models` (OpenAI-style list): the served model, or no entry while none is loaded."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------------------------------ parsing


def field_path(loc: tuple[int | str, ...], root: str = "") -> str:
    """A pydantic error location as the front names fields: ("documents", 3, "text") -> "documents[3].text"."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def invalid_input(exc: ValidationError, root: str = "") -> InvalidInputError:
    """The first error of `exc` as `InvalidInputError("<field path>: <message>")` (400).

    `root` names the value when `exc` comes from a bare `TypeAdapter` (its locations lack the field name).
    """
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        path, message = field_path(err["loc"], root) + cause.at, str(cause)
    else:  # not one of the checks above (should not happen): pydantic's own words
        path, message = field_path(err["loc"], root), err["msg"]
    return InvalidInputError(f"{path}: {message}" if path else message)


def parse(model: type[M], body: dict[str, Any]) -> M:
    """Validate a decoded JSON object as `model`.

    Raises:
        InvalidInputError: a field is missing or wrong; the message names the first one (declaration order).
    """
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_input(exc) from None


_DOCUMENTS = TypeAdapter(Documents)
_TEXTS = TypeAdapter(Texts)


def cohere_documents(value: Any, field_name: str = "documents") -> list[str]:
    """Cohere `documents` -> list of texts. Entries may be strings, `{"text": ...}` objects or null.

    A null entry, an object without `text` or with `"text": null` is scored as "" (documented).
    Raises InvalidInputError naming the field/index for any other shape (`documents[2]: ...`).
    """
    try:
        return [_as_text(d) for d in _DOCUMENTS.validate_python(value)]
    except ValidationError as exc:
        raise invalid_input(exc, field_name) from None


def tei_texts(value: Any) -> list[str]:
    """TEI `texts` -> list of strings (null entries scored as ""). Raises InvalidInputError otherwise (`texts[1]: ...`)."""
    try:
        return [t or "" for t in _TEXTS.validate_python(value)]
    except ValidationError as exc:
        raise invalid_input(exc, "texts") from None


#: The request bodies (read by hand, so FastAPI does not see them): `openapi_schemas` adds them.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (CohereRerankRequest, TeiRerankRequest)


def openapi_schemas() -> dict[str, Any]:
    """JSON schemas of REQUEST_MODELS and the models they use, keyed by name, for `components.schemas`."""
    _, top = models_json_schema([(m, "validation") for m in REQUEST_MODELS], ref_template=REF_TEMPLATE)
    return dict(top.get("$defs", {}))


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI `requestBody` referring to `model` (for a route's `openapi_extra`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}},
        }
    }

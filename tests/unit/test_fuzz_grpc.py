"""Fuzzing every field of every gRPC method (hypothesis) against a real in-process gRPC server on the fake
backend: `fashion_rerank.v1.Reranker` Rerank and Search, TEI's `tei.v1.Rerank` Rerank / RerankStream and
`tei.v1.Info`.

Inputs: strings (empty, blank, NUL, unicode of every plane but surrogates, bidi and zero-width marks, texts
at and over `max_text_chars`, queries over the model's token room), numbers (0, 1, max uint32, unknown enum
values), repeated fields (empty, a few, `max_documents` and thousands), the `Document.content` oneof unset,
odd filters (no field, unknown attribute, no values, blank values, thousands of values), odd index names,
and undecodable wire bytes (invalid UTF-8 in a string field, truncated or garbage messages).

Each call has a deadline (no hang), and the answer must be OK or one of the codes `reranker.status` lists
for that method, never INTERNAL or UNKNOWN; an OK answer must hold one well-formed result per document.
Search runs on a real opensearch-py client pointed at a closed port (no OpenSearch here: a valid request
ends in UNAVAILABLE, so this fuzzes Search's request validation); `tests/integration/test_fuzz_real.py`
fuzzes it against the real node. The whole file runs in about 20 s.
"""

from __future__ import annotations

import math
import socket
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fashion_rerank.settings import ServeSettings
from fashion_rerank.v1 import reranker_pb2, tei_pb2
from reranker.grpc_front import GrpcServer
from reranker.search import SearchService

from .conftest import Loads

OK, INVALID, EXHAUSTED = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
#: What each method may answer to any input while a model is loaded (`reranker.status`).
RERANK_CODES = {OK, INVALID, EXHAUSTED}
SEARCH_CODES = {
    INVALID,
    EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,  # the closed port: every valid request gets this far
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
}
INFO_CODES = {OK, INVALID}

LIMITS = dict(max_documents=1000, max_text_chars=20_000, max_message_bytes=16 * 1024 * 1024)
DEADLINE_S = 20.0  # per call; the fake backend answers in milliseconds, so only a hang reaches it
U32 = 2**32 - 1
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# --------------------------------------------------------------------------------------------- inputs

#: any text protobuf can carry (every code point but the surrogates, which are not valid UTF-8)
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
ODD = st.sampled_from(
    [
        "",
        " ",
        "\t\n\r",
        "\x00",
        "red\x00dress",
        "\u3000",  # ideographic space: blank to str.strip
        "\u200b",  # zero-width space: not blank to str.strip, no token to a tokenizer
        "\ufeff",
        "\u202eevil",  # right-to-left override
        "\U0010ffff",
        "\x1c\x1d\x1e\x1f",  # separators str.split splits on
        "👗🧥 red midi dress",
        "Ünïcödé Kleid",
        "连衣裙",
        "a" * 5000,  # one very long word
    ]
)
N_CHARS = st.sampled_from([LIMITS["max_text_chars"] - 1, LIMITS["max_text_chars"], LIMITS["max_text_chars"] + 1, 100_000])
HUGE = N_CHARS.map(lambda n: ("red dress " * (n // 10 + 1))[:n])
WORDY = st.integers(100, 400).map(lambda n: " ".join(["red"] * n))  # over the fake model's 128-token pair
STRING = st.one_of(TEXT, ODD, HUGE, WORDY)
SHORT = st.one_of(TEXT, ODD)
NUMBER = st.one_of(st.sampled_from([0, 1, 2, 10, 999, 1000, 1001, U32]), st.integers(0, U32))
MANY = st.sampled_from([0, 1, 2, 999, 1000, 1001, 3000])


def _product(strings=STRING):
    fields = [f.name for f in reranker_pb2.Product.DESCRIPTOR.fields]
    return st.fixed_dictionaries({}, optional={f: strings for f in fields}).map(lambda kw: reranker_pb2.Product(**kw))


def _document(strings=STRING):
    """A Document with `content` = text, product or unset (the oneof left empty)."""
    return st.one_of(
        st.builds(lambda i, t: reranker_pb2.Document(id=i, text=t), SHORT, strings),
        st.builds(lambda i, p: reranker_pb2.Document(id=i, product=p), SHORT, _product(strings)),
        st.builds(lambda i: reranker_pb2.Document(id=i), SHORT),
    )


def _repeated(item, small_item):
    """A few fuzzed items, or one short item repeated up to thousands of times."""
    return st.one_of(
        st.lists(item, max_size=6),
        st.builds(lambda x, n: [x] * n, small_item, MANY),
    )


DOCUMENTS = _repeated(_document(), _document(SHORT))
TEXTS = _repeated(STRING, SHORT)
DIRECTION = st.sampled_from([0, 1, 2, 7, 2**31 - 1])  # RIGHT, LEFT, and values the enum does not name


# --------------------------------------------------------------------------------------------- server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeEncoder:
    """A bi-encoder stand-in for Search's validation: a fixed unit vector (nothing reaches OpenSearch)."""

    dimension = 8

    def encode_query(self, query: str) -> np.ndarray:
        return np.full(self.dimension, 1 / math.sqrt(self.dimension), np.float32)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """A started GrpcServer over a core on the fake backend, with Search on a client that reaches nothing."""
    from opensearchpy import OpenSearch

    from fashion_rerank.registry import ModelRegistry
    from reranker.core import ScoringCore

    from .conftest import promote_new

    registry = ModelRegistry(tmp_path_factory.mktemp("fuzz") / "models", "fake-ce")
    promote_new(registry)
    s = ServeSettings(grpc_port=0, threads=1, registry_poll_s=0.05, knn_timeout_s=2.0, **LIMITS)
    core = ScoringCore(s, registry, loader=Loads())
    core.start()
    client = OpenSearch(hosts=[f"http://127.0.0.1:{_closed_port()}"], max_retries=0, timeout=2)
    search = SearchService(s, core, client=client, encoder=FakeEncoder(), index="products")
    server = GrpcServer(s, core, search=search)
    server.start()
    big = 64 * 1024 * 1024  # the client sends and reads more than the server allows: the server's limit is tested
    channel = grpc.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big)]
    )
    yield channel
    channel.close()
    server.stop(0.5)
    core.stop(1.0)


def _call(channel, method: str, request, stream: bool = False):
    """(code, details, response or None, seconds) of one call with a deadline; `request` is a message, raw
    bytes, or for a stream a list of either."""

    def ser(m):
        return m if isinstance(m, bytes) else m.SerializeToString()

    kind = channel.stream_unary if stream else channel.unary_unary
    fn = kind(method, request_serializer=ser, response_deserializer=lambda b: b)
    t0 = time.monotonic()
    try:
        raw = fn(iter(request) if stream else request, timeout=DEADLINE_S)
        return OK, "", raw, time.monotonic() - t0
    except grpc.RpcError as err:
        return err.code(), err.details(), None, time.monotonic() - t0


def _check(code, details, seconds, allowed, what):
    event(code.name)
    assert seconds < DEADLINE_S, f"{what}: took {seconds:.1f} s (deadline {DEADLINE_S} s)"
    assert code in allowed, f"{what}: {code.name} {details!r}"
    if code != OK:
        assert details, f"{what}: {code.name} without a message"


# ----------------------------------------------------------------------------------------------- tests


@FUZZ
@given(query=STRING, documents=DOCUMENTS, top_n=NUMBER, return_text=st.booleans())
def test_fuzz_rerank(fuzz_server, query, documents, top_n, return_text):
    req = reranker_pb2.RerankRequest(query=query, documents=documents, top_n=top_n, return_text=return_text)
    code, details, raw, s = _call(fuzz_server, "/fashion_rerank.v1.Reranker/Rerank", req)
    _check(code, details, s, RERANK_CODES, "Rerank")
    if code == OK:
        resp = reranker_pb2.RerankResponse.FromString(raw)
        n = len(documents)
        assert len(resp.results) == (min(n, top_n) if top_n else n)
        assert len({r.index for r in resp.results}) == len(resp.results)
        assert [r.rank for r in resp.results] == list(range(1, len(resp.results) + 1))
        assert all(0.0 <= r.score <= 1.0 and math.isfinite(r.logit) for r in resp.results)
        assert [r.logit for r in resp.results] == sorted((r.logit for r in resp.results), reverse=True)
        assert all(r.id == documents[r.index].id for r in resp.results)
        if n:
            assert resp.model_version


ATTRIBUTE_NAMES = ("colour", "gender", "brand", "product_type", "usage", "season", "category")
ATTRIBUTE = st.sampled_from(ATTRIBUTE_NAMES)
FILTER = st.one_of(
    st.builds(  # a well-formed filter, odd values
        lambda f, v: reranker_pb2.AttributeFilter(field=f, values=v),
        ATTRIBUTE,
        st.one_of(st.lists(SHORT, min_size=1, max_size=3), st.builds(lambda x, n: [x] * n, SHORT, MANY)),
    ),
    st.builds(  # odd field names, no values
        lambda f, v: reranker_pb2.AttributeFilter(field=f, values=v),
        st.one_of(st.sampled_from(["", "title", "embedding", "colour.keyword", "COLOUR", "_id"]), SHORT),
        st.lists(SHORT, max_size=2),
    ),
)
#: a filter Search accepts: a known attribute and at least one non-blank value among odd ones
VALID_FILTER = st.builds(
    lambda f, v: reranker_pb2.AttributeFilter(field=f, values=[*v, "Red"]), ATTRIBUTE, st.lists(SHORT, max_size=3)
)
#: Search's numbers: mostly in the range a valid request uses, also 0 (server default), the limits and max uint32
SEARCH_NUMBER = st.one_of(st.sampled_from([0, 0, 1, 10, 100, 1000, 1001, U32]), st.integers(0, 120), st.integers(0, U32))
INDEX = st.one_of(
    st.sampled_from(["", "", "", "products", "PRODUCTS", "*", "products,other", "_all", "-x", "../x", "a" * 300]), SHORT
)


@FUZZ
@given(
    query=STRING,
    top_k=SEARCH_NUMBER,
    top_n=SEARCH_NUMBER,
    filters=st.lists(FILTER, max_size=3),
    index=INDEX,
    client_id=STRING,
)
def test_fuzz_search(fuzz_server, query, top_k, top_n, filters, index, client_id):
    req = reranker_pb2.SearchRequest(query=query, top_k=top_k, top_n=top_n, filters=filters, index=index, client_id=client_id)
    code, details, _, s = _call(fuzz_server, "/fashion_rerank.v1.Reranker/Search", req)
    _check(code, details, s, SEARCH_CODES, "Search")


@settings(FUZZ, max_examples=60)
@given(
    query=SHORT.map(lambda q: q if q.strip() else q + "dress"),
    k_n=st.integers(1, 1000).flatmap(lambda k: st.tuples(st.just(k), st.integers(0, k))),
    filters=st.lists(VALID_FILTER, max_size=3),
    client_id=STRING,
)
def test_fuzz_search_odd_text_in_valid_requests(fuzz_server, query, k_n, filters, client_id):
    """Odd query, filter values and client ids in requests Search accepts: they reach OpenSearch (here: the
    closed port, UNAVAILABLE), none of them breaks the request on the way."""
    req = reranker_pb2.SearchRequest(query=query, top_k=k_n[0], top_n=k_n[1], filters=filters, client_id=client_id)
    code, details, _, s = _call(fuzz_server, "/fashion_rerank.v1.Reranker/Search", req)
    _check(code, details, s, {grpc.StatusCode.UNAVAILABLE}, "Search")


@FUZZ
@given(
    query=STRING,
    texts=TEXTS,
    truncate=st.booleans(),
    raw_scores=st.booleans(),
    return_text=st.booleans(),
    direction=DIRECTION,
)
def test_fuzz_tei_rerank(fuzz_server, query, texts, truncate, raw_scores, return_text, direction):
    req = tei_pb2.RerankRequest(
        query=query,
        texts=texts,
        truncate=truncate,
        raw_scores=raw_scores,
        return_text=return_text,
        truncation_direction=direction,
    )
    code, details, raw, s = _call(fuzz_server, "/tei.v1.Rerank/Rerank", req)
    _check(code, details, s, RERANK_CODES, "tei.Rerank")
    if code == OK:
        resp = tei_pb2.RerankResponse.FromString(raw)
        assert sorted(r.index for r in resp.ranks) == list(range(len(texts)))
        assert all(math.isfinite(r.score) for r in resp.ranks)
        if not raw_scores:
            assert all(0.0 <= r.score <= 1.0 for r in resp.ranks)
        if return_text:
            assert all(r.text == texts[r.index] for r in resp.ranks)


STREAM_MESSAGE = st.builds(
    tei_pb2.RerankStreamRequest,
    query=st.one_of(SHORT, st.sampled_from(["red dress", "red dress", "blue jeans"]), HUGE, WORDY),
    text=STRING,
    truncate=st.booleans(),
    raw_scores=st.booleans(),
    return_text=st.booleans(),
    truncation_direction=DIRECTION,
)
SHORT_STREAM_MESSAGE = st.builds(tei_pb2.RerankStreamRequest, query=SHORT, text=SHORT, truncate=st.booleans())


@FUZZ
@given(messages=_repeated(STREAM_MESSAGE, SHORT_STREAM_MESSAGE))
def test_fuzz_tei_rerank_stream(fuzz_server, messages):
    code, details, raw, s = _call(fuzz_server, "/tei.v1.Rerank/RerankStream", messages, stream=True)
    _check(code, details, s, RERANK_CODES, "tei.RerankStream")
    if code == OK:
        resp = tei_pb2.RerankResponse.FromString(raw)
        assert sorted(r.index for r in resp.ranks) == list(range(len(messages)))


@settings(FUZZ, max_examples=30)
@given(garbage=st.binary(max_size=64))
def test_fuzz_tei_info(fuzz_server, garbage):
    """InfoRequest has no fields: any bytes that parse (unknown fields) get the server's description."""
    code, details, raw, s = _call(fuzz_server, "/tei.v1.Info/Info", garbage)
    _check(code, details, s, INFO_CODES, "tei.Info")
    if code == OK:
        info = tei_pb2.InfoResponse.FromString(raw)
        assert info.max_client_batch_size == LIMITS["max_documents"] and info.model_type == tei_pb2.MODEL_TYPE_RERANKER


# ------------------------------------------------------------------------------------- undecodable wire


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    key, length, out = (number << 3) | 2, len(payload), bytearray()
    for v in (key, length):
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
    return bytes(out) + payload


INVALID_UTF8 = st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"red\xfedress", b"\xf4\x90\x80\x80", b"\x80"])
UNARY = {
    "/fashion_rerank.v1.Reranker/Rerank": RERANK_CODES,
    "/fashion_rerank.v1.Reranker/Search": SEARCH_CODES | {OK},
    "/tei.v1.Rerank/Rerank": RERANK_CODES,
    "/tei.v1.Info/Info": INFO_CODES,
}


@settings(FUZZ, max_examples=60)
@given(method=st.sampled_from(sorted(UNARY)), body=st.one_of(st.binary(max_size=48), INVALID_UTF8.map(lambda b: _field(1, b))))
def test_fuzz_undecodable_unary_requests(fuzz_server, method, body):
    """Bytes that are not a valid request message get INVALID_ARGUMENT, not gRPC's own INTERNAL."""
    code, details, _, s = _call(fuzz_server, method, body)
    _check(code, details, s, UNARY[method], method)


@settings(FUZZ, max_examples=30)
@given(bad=INVALID_UTF8, field=st.sampled_from([1, 2]), before=st.integers(0, 3))
def test_fuzz_undecodable_stream_message(fuzz_server, bad, field, before):
    good = tei_pb2.RerankStreamRequest(query="red dress", text="red summer dress").SerializeToString()
    code, details, _, s = _call(fuzz_server, "/tei.v1.Rerank/RerankStream", [good] * before + [_field(field, bad)], stream=True)
    _check(code, details, s, {INVALID}, "tei.RerankStream")


# -------------------------------------------------------------------------------- found by the fuzzing


@pytest.mark.parametrize(
    "method, body",
    [
        ("/fashion_rerank.v1.Reranker/Rerank", _field(1, b"\xff\xfe")),  # query not UTF-8
        ("/fashion_rerank.v1.Reranker/Rerank", _field(2, _field(2, b"\xc0"))),  # a document's text not UTF-8
        ("/fashion_rerank.v1.Reranker/Search", _field(1, b"red\xfedress")),
        ("/tei.v1.Rerank/Rerank", _field(2, b"\xed\xa0\x80")),  # an encoded surrogate
        ("/tei.v1.Info/Info", b"\xff\xff\xff"),  # not a message at all
    ],
)
def test_undecodable_request_is_invalid_argument(fuzz_server, method, body):
    """Regression: gRPC answered INTERNAL "Exception deserializing request!" to a message that does not
    parse (invalid UTF-8 in a proto3 string, garbage bytes); it is the client's error."""
    code, details, _, _ = _call(fuzz_server, method, body)
    assert code == INVALID and "not a valid" in details, (code, details)


def test_refused_stream_group_drops_the_groups_already_queued(make_core):
    """Regression: RerankStream queues one core request per (query, direction, truncate) group; when a later
    group was refused (here a query too long for the model, INVALID_ARGUMENT; a full queue does the same),
    the groups already queued were never cancelled and the worker scored them for a call that had ended."""
    loads = Loads(delay_per_pair_s=0.05)
    core = make_core(loads=loads, sub_batch=1, sub_batch_tokens=1)  # one pair per forward pass
    server = GrpcServer(ServeSettings(grpc_port=0, threads=1), core)
    server.start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            first = [tei_pb2.RerankStreamRequest(query="red dress", text=f"red dress {i}", truncate=True) for i in range(20)]
            refused = tei_pb2.RerankStreamRequest(query="red " * 200, text="red dress", truncate=True)
            code, details, _, _ = _call(channel, "/tei.v1.Rerank/RerankStream", [*first, refused], stream=True)
        assert code == INVALID and "query is" in details, (code, details)
        deadline = time.monotonic() + 5
        while (core.queue_depth()[1] or core.busy) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not core.busy
        runs = loads.loaded[-1].runs
        assert runs < 20, f"{runs} of the 20 pairs of the ended call were scored"
    finally:
        server.stop(0.5)


def test_messages_over_the_size_limit_are_resource_exhausted(fuzz_server):
    """The edges the fuzzing reaches only by chance: a request over `max_message_bytes` is refused by gRPC
    (RESOURCE_EXHAUSTED, documented in the proto), and so is an answer that would pass it (`return_text` echoes
    texts: a request just under the limit gets a slightly larger answer; the scoring is spent, the code is
    still a documented one, never INTERNAL)."""
    text = ("red dress " * 2000)[: LIMITS["max_text_chars"] - 10]
    n = LIMITS["max_message_bytes"] // (len(text) + 6)
    over = tei_pb2.RerankRequest(query="red dress", texts=[text] * (n + 5), truncate=True)
    code, details, _, _ = _call(fuzz_server, "/tei.v1.Rerank/Rerank", over)
    assert over.ByteSize() > LIMITS["max_message_bytes"] and code == EXHAUSTED and "Received message larger" in details
    under = tei_pb2.RerankRequest(query="red dress", texts=[text] * (n - 1), truncate=True, return_text=True)
    while (room := LIMITS["max_message_bytes"] - under.ByteSize() - 200) > 10:  # fill up to 200 bytes below the limit
        under.texts.append(text[: min(len(text), room - 6)])
    code, details, _, _ = _call(fuzz_server, "/tei.v1.Rerank/Rerank", under)
    assert (
        LIMITS["max_message_bytes"] - 300 < under.ByteSize() < LIMITS["max_message_bytes"]
        and code == EXHAUSTED
        and "Sent message larger" in details
    )

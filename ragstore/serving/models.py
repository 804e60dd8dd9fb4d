"""The HTTP API's request and response models (pydantic), and its limits.

Requests are declared here field by field: they are the API's contract and
say what the engine refuses where JSON Schema can say it. Responses are
*generated* from the engine's result dataclasses (:mod:`ragstore.types`), so a
field added to ``Hit`` or ``Stats`` reaches the API and its schema without a
second list to keep in step; :func:`validated` checks every response against
its model before it is sent.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..config import StoreConfig
from ..types import AddResult, Chunk, Document, DocumentInfo, Hit, IngestSummary, Stats

__all__ = [
    "MAX_K",
    "MAX_RETRO_K",
    "MAX_BATCH",
    "MAX_DOCS",
    "QueryRequest",
    "BatchQueryRequest",
    "RetrieveRequest",
    "DocumentBody",
    "DocumentIn",
    "AddRequest",
    "BatchAddRequest",
    "DeleteManyRequest",
    "HitOut",
    "QueryResponse",
    "BatchQueryResponse",
    "RetrievedChunk",
    "RetrieveResponse",
    "AddResultOut",
    "IngestSummaryOut",
    "DocumentOut",
    "DeleteResponse",
    "StatsOut",
    "ConfigOut",
    "HealthOut",
    "ErrorOut",
    "from_dataclass",
    "validated",
    "error_responses",
    "READ_ERRORS",
    "WRITE_ERRORS",
]

MAX_K = 1000
MAX_RETRO_K = 100
MAX_BATCH = 1024
MAX_DOCS = 10_000


# ---------------------------------------------------------------------- requests
class _In(BaseModel):
    # strict: "10" is not an int, 1 is not a bool; unknown fields are refused
    model_config = ConfigDict(extra="forbid", strict=True)


Vector = Annotated[list[float], Field(min_length=1)]
Meta = dict[str, Any]
# what the engine refuses, said in the schema where JSON Schema can say it
Text = Annotated[str, Field(min_length=1, pattern=r"\S")]
DocId = Annotated[str, Field(min_length=1, max_length=480, description="Document id (at most 480 UTF-8 bytes).")]
Source = Annotated[str, Field(min_length=1, max_length=200)]
# a source to select by: "" selects the documents without one (as Store.sources() reports them)
SourceFilter = Annotated[str, Field(max_length=200, description="A source name; '' for documents without one.")]


class QueryRequest(_In):
    query: Text | Vector = Field(
        description="A text (embedded by the store's embedder) or a vector of the store's dimension.")
    k: int = Field(10, ge=1, le=MAX_K, description="Number of neighbours.")
    sources: list[SourceFilter] | None = Field(
        None, description="Search only these sources (unknown names match nothing; '' those without one).")
    exclude_docs: list[DocId] | None = Field(None, description="Never return chunks of these documents.")
    rerank: bool | None = Field(
        None, description="Re-score candidates with the exact vectors (default: on for quantized indexes).")
    exact: bool = Field(False, description="Brute force over every stored vector (slow; ground truth).")
    min_score: float | None = Field(None, description="Drop hits scoring below this (fewer than k may return).")


class BatchQueryRequest(_In):
    queries: (
        Annotated[list[Text], Field(min_length=1, max_length=MAX_BATCH)]
        | Annotated[list[Vector], Field(min_length=1, max_length=MAX_BATCH)]
    ) = Field(description="Texts, or vectors of the store's dimension (not a mix).")
    k: int = Field(10, ge=1, le=MAX_K)
    sources: list[SourceFilter] | None = None
    exclude_docs: list[DocId] | None = None
    rerank: bool | None = None
    exact: bool = False
    min_score: float | None = None


class RetrieveRequest(_In):
    text: Text = Field(description="The sequence; cut into chunks of the store's chunk_tokens with its tokenizer.")
    k: int = Field(2, ge=1, le=MAX_RETRO_K, description="Neighbours per chunk.")
    sources: list[SourceFilter] | None = None
    exclude_docs: list[DocId] | None = Field(
        None, description="E.g. the document the sequence comes from (RETRO training).")
    rerank: bool | None = None
    shift: bool = Field(
        False, description="Causal layout: position u holds the neighbours found with chunk u-1 (none at 0).")
    max_overlap: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Drop neighbours whose leakage (longest common token run / chunk length) exceeds this; k is kept.",
    )


class DocumentBody(_In):
    text: Text
    source: Source | None = None
    meta: Meta | None = None
    vectors: Annotated[list[Vector], Field(min_length=1)] | None = Field(
        None, description="Precomputed (n_chunks, dim) vectors for the chunks the store cuts the text into."
    )


class DocumentIn(DocumentBody):
    id: DocId


class AddRequest(DocumentIn):
    replace: bool = Field(False, description="Overwrite an existing document instead of answering 409.")


class BatchAddRequest(_In):
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCS)
    replace: bool = Field(False, description="Replace changed documents, skip unchanged ones (resumable ingest).")


class MetaUpdate(_In):
    meta: Meta = Field(description="The new metadata (a JSON object).")
    merge: bool = Field(False, description="Update these keys and keep the others (default: replace the metadata).")


class DeleteManyRequest(_In):
    ids: list[DocId] = Field(min_length=1, max_length=MAX_DOCS)
    missing_ok: bool = Field(False, description="Ignore missing ids instead of answering 404 (and deleting nothing).")


# ---------------------------------------------------------------------- responses
_OUT = ConfigDict(from_attributes=True)  # validated from the engine's dataclass instances


def from_dataclass(
    cls: type,
    *,
    name: str,
    types: dict[str, Any] | None = None,
    descriptions: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    doc: str | None = None,
) -> type[BaseModel]:
    """A response model with one required field per field of the dataclass ``cls``.

    ``types`` narrows a field's type for the schema (e.g. a Literal for a status
    string), ``descriptions`` documents fields, ``extra`` adds ``name: (type,
    Field)`` pairs, ``doc`` describes the model (default: the dataclass's
    docstring). Every field is required: responses always carry them all."""
    hints = typing.get_type_hints(cls)
    types = types or {}
    descriptions = descriptions or {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        fields[f.name] = (types.get(f.name, hints[f.name]), Field(description=descriptions.get(f.name)))
    fields.update(extra or {})
    if doc is None and cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
        doc = cls.__doc__  # not the signature that @dataclass writes when there is no docstring
    model: type[BaseModel] = create_model(name, __config__=_OUT, __doc__=doc, **fields)
    return model


HitOut = from_dataclass(Hit, name="HitOut", descriptions={
    "score": "Higher is better (cosine / inner product, or -L2^2).",
    "continuation": "The next chunk of the same document (RETRO's F), or null at its end.",
})
DocumentOut = from_dataclass(Document, name="DocumentOut")
DocumentInfoOut = from_dataclass(DocumentInfo, name="DocumentInfoOut")


class DocumentPageOut(BaseModel):
    model_config = _OUT
    documents: list[DocumentInfoOut]  # type: ignore[valid-type]
    next_cursor: str | None = Field(description="The `after` of the next page; null on the last page.")
AddResultOut = from_dataclass(AddResult, name="AddResultOut",
                              types={"status": Literal["added", "replaced", "unchanged"]})
IngestSummaryOut = from_dataclass(
    IngestSummary, name="IngestSummaryOut", doc="What an add_many call did.",
    descriptions={"skipped": "Invalid documents skipped (always 0 here: a bad document stops the request)."},
)
StatsOut = from_dataclass(Stats, name="StatsOut", doc="Counts and sizes of the store.")
ConfigOut = from_dataclass(StoreConfig, name="ConfigOut")
RetrievedChunk = from_dataclass(
    Chunk, name="RetrievedChunk", doc="One chunk of the request's text, with the neighbours found for it.",
    descriptions={"text": "The input chunk; text[start:end] of the request's text."},
    extra={
        "retrieved_with": (int | None, Field(
            description="The position whose chunk found these neighbours (u, or u-1 with shift).")),
        "neighbours": (list[HitOut], Field()),  # type: ignore[valid-type]
        "overlaps": (list[float] | None, Field(description="Leakage of each neighbour (with max_overlap), else null.")),
    },
)


class QueryResponse(BaseModel):
    model_config = _OUT
    hits: list[HitOut]  # type: ignore[valid-type]


class BatchQueryResponse(BaseModel):
    model_config = _OUT
    results: list[list[HitOut]]  # type: ignore[valid-type]


class RetrieveResponse(BaseModel):
    model_config = _OUT
    chunks: list[RetrievedChunk]  # type: ignore[valid-type]


class DeleteResponse(BaseModel):
    # Store.delete / delete_many return the number of chunks removed (a Deleted int)
    chunks_removed: int


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    readonly: bool


class ErrorOut(BaseModel):
    error: str = Field(description="The error's class name, e.g. NotFoundError.")
    message: str = Field(description="What went wrong, without server paths (the server log has the detail).")
    details: list[Any] | None = None


def validated(model: type[BaseModel], obj: Any) -> dict[str, Any]:
    """``obj`` (a dataclass result or a dict of them) checked against ``model``,
    as plain Python values for :mod:`ragstore.serving.jsonenc` to encode."""
    return model.model_validate(obj).model_dump()


# ---------------------------------------------------------------------- error statuses in the schema
_ERROR_TEXT = {
    401: "Missing or wrong bearer token (servers started with --token).",
    403: "The server or store is read-only.",
    404: "No such document or chunk.",
    409: "The document id exists (pass replace), or a configuration mismatch.",
    413: "Request body too large.",
    422: "Invalid input (bad JSON, wrong types, empty text, wrong vector shape ...).",
    423: "Another process holds the store's writer lock.",
    503: "The store is closed, its embedder is not available, or the writer process is restarting.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: these error statuses, and 500."""
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorOut, "description": _ERROR_TEXT[c]} for c in codes}
    out[500] = {"model": ErrorOut, "description": "Internal error (logged by the server; no details are sent)."}
    return out


READ_ERRORS = (401, 413, 422, 503)
WRITE_ERRORS = (401, 403, 409, 413, 422, 423, 503)

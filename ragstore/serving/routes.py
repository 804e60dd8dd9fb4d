"""The HTTP API's routes, as FastAPI routers.

Document ids live only under ``/documents/{doc_id:path}``; operations on
several documents are ``POST /documents:batch`` and ``POST /documents:delete``,
whose paths no document id can take (an id in the path is always after
``/documents/``). The store comes in through the :func:`backend` dependency,
the token check through :func:`ragstore.serving.auth.require_token`.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, Response

from .. import Store, __version__
from ..engine.catalog import MAX_PAGE
from ..errors import InvalidInputError
from ..types import Doc
from .auth import require_token
from .backend import Backend
from .middleware import JSONResponse
from .models import (
    READ_ERRORS,
    WRITE_ERRORS,
    AddRequest,
    AddResultOut,
    BatchAddRequest,
    BatchQueryRequest,
    BatchQueryResponse,
    ConfigOut,
    DeleteManyRequest,
    DeleteResponse,
    DocumentBody,
    DocumentIn,
    DocumentInfoOut,
    DocumentOut,
    DocumentPageOut,
    HealthOut,
    HitOut,
    IngestSummaryOut,
    MetaUpdate,
    QueryRequest,
    QueryResponse,
    RetrieveRequest,
    RetrieveResponse,
    StatsOut,
    error_responses,
    validated,
)

__all__ = ["backend", "service", "api", "docs"]


def backend(request: Request) -> Backend:
    """Dependency: the app's :class:`Backend` (set by :func:`ragstore.serving.app.create_app`)."""
    b: Backend = request.app.state.backend
    return b


BackendDep = Annotated[Backend, Depends(backend)]

# no token: supervisors and load balancers probe it without the secret
service = APIRouter(tags=["service"])
# everything else needs the token (when the server has one)
api = APIRouter(dependencies=[Depends(require_token)])
# the schema and its browser, not part of the schema themselves
docs = APIRouter(dependencies=[Depends(require_token)], include_in_schema=False)


def _vectors(rows: Any, what: str) -> np.ndarray | None:
    """Vectors from JSON rows; ragged rows are an input error, not a crash."""
    if rows is None:
        return None
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise InvalidInputError(f"{what} have rows of different lengths {sorted(lengths)}")
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), lengths.pop() if lengths else 0)


def _doc(d: DocumentIn) -> Doc:
    return Doc(d.id, d.text, d.source, d.meta, _vectors(d.vectors, f"vectors of document {d.id!r}"))


def _added(result: Any) -> JSONResponse:
    """201 when the document is new, 200 when replaced or unchanged."""
    return JSONResponse(validated(AddResultOut, result), status_code=201 if result.status == "added" else 200)


# ---------------------------------------------------------------------- service
@service.get("/health", response_model=HealthOut, summary="Liveness (never needs a token)")
def health(b: BackendDep) -> JSONResponse:
    return JSONResponse(validated(HealthOut, {"status": "ok", "version": __version__, "readonly": b.refuses_writes}))


@api.get("/stats", response_model=StatsOut, tags=["service"], responses=error_responses(*READ_ERRORS),
         summary="Counts and sizes")
async def stats(b: BackendDep) -> JSONResponse:
    return JSONResponse(validated(StatsOut, await b.read(lambda s: s.stats())))


@api.get("/config", response_model=ConfigOut, tags=["service"], responses=error_responses(*READ_ERRORS),
         summary="The store's fixed configuration (embedder, dimension, chunk size, metric ...)")
async def config(b: BackendDep) -> JSONResponse:
    return JSONResponse(validated(ConfigOut, await b.read(lambda s: s.config)))


# ---------------------------------------------------------------------- retrieval
@api.post("/query", response_model=QueryResponse, tags=["retrieval"], responses=error_responses(*READ_ERRORS),
          summary="The k nearest chunks to a text or a vector, with continuations")
async def query(req: QueryRequest, b: BackendDep) -> JSONResponse:
    def run(s: Store) -> dict[str, Any]:
        q: Any = req.query
        if not isinstance(q, str):
            q = _vectors([q], "query vector")[0]  # type: ignore[index]
        hits = s.query(q, req.k, sources=req.sources, exclude_docs=req.exclude_docs, rerank=req.rerank,
                       exact=req.exact, min_score=req.min_score)
        return validated(QueryResponse, {"hits": hits})

    return JSONResponse(await b.read(run))


@api.post("/query/batch", response_model=BatchQueryResponse, tags=["retrieval"],
          responses=error_responses(*READ_ERRORS), summary="Several queries at once (all texts or all vectors)")
async def query_batch(req: BatchQueryRequest, b: BackendDep) -> JSONResponse:
    def run(s: Store) -> dict[str, Any]:
        qs: Any = req.queries
        if not isinstance(qs[0], str):
            qs = _vectors(qs, "query vectors")
        res = s.query_many(qs, req.k, sources=req.sources, exclude_docs=req.exclude_docs, rerank=req.rerank,
                           exact=req.exact, min_score=req.min_score)
        return validated(BatchQueryResponse, {"results": res})

    return JSONResponse(await b.read(run))


@api.post("/retrieve", response_model=RetrieveResponse, tags=["retrieval"], responses=error_responses(*READ_ERRORS),
          summary="RETRO: the k neighbours (with continuations) of every chunk of a sequence")
async def retrieve(req: RetrieveRequest, b: BackendDep) -> JSONResponse:
    def run(s: Store) -> dict[str, Any]:
        from ..retrieval.retro import retrieve_sequence

        r = retrieve_sequence(s, req.text, k=req.k, exclude_docs=req.exclude_docs, shift=req.shift,
                              max_overlap=req.max_overlap, sources=req.sources, rerank=req.rerank)
        chunks = [
            {"position": c.index, "text": c.text, "start": c.start, "end": c.end, "n_tokens": c.n_tokens,
             "retrieved_with": r.retrieved_with[u], "neighbours": r.neighbours[u],
             "overlaps": None if r.overlaps is None else r.overlaps[u]}
            for u, c in enumerate(r.chunks)
        ]
        return validated(RetrieveResponse, {"chunks": chunks})

    return JSONResponse(await b.read(run))


# ---------------------------------------------------------------------- documents: reads
DocIdPath = Annotated[str, Path(description="Document id (percent-encode '/', '?', '#' ...).")]


@api.get("/documents", response_model=DocumentPageOut, tags=["documents"], responses=error_responses(*READ_ERRORS),
         summary="A page of documents (id, source, meta, counts; no text) in id order")
async def list_documents(
    b: BackendDep,
    source: Annotated[str | None, Query(max_length=200, description="Only this source ('' for none).")] = None,
    after: Annotated[str | None, Query(description="The previous page's next_cursor.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Documents per page.")] = 100,
) -> JSONResponse:
    page = await b.read(lambda s: s.list_documents(source=source, after=after, limit=limit))
    return JSONResponse(validated(DocumentPageOut, page))


@api.get("/documents/{doc_id:path}", response_model=DocumentOut, tags=["documents"],
         responses=error_responses(404, *READ_ERRORS), summary="A stored document, its text rebuilt exactly")
async def get_document(doc_id: DocIdPath, b: BackendDep) -> JSONResponse:
    return JSONResponse(validated(DocumentOut, await b.read(lambda s: s.get(doc_id))))


@api.get("/chunks/{chunk_id}", response_model=HitOut, tags=["documents"],
         responses=error_responses(404, *READ_ERRORS), summary="One chunk with its continuation (score 0)")
async def get_chunk(b: BackendDep, chunk_id: int = Path(ge=0, le=2**63 - 1)) -> JSONResponse:
    return JSONResponse(validated(HitOut, await b.read(lambda s: s.get_chunk(chunk_id))))


# ---------------------------------------------------------------------- documents: writes
# The colon routes come before /documents/{doc_id:path} would matter: POST has no
# such route, and the colon cannot start an id segment, so they never collide.
@api.post("/documents:batch", response_model=IngestSummaryOut, tags=["documents"],
          responses=error_responses(*WRITE_ERRORS),
          summary="Add many documents; batches commit as they go (a bad document stops the rest)")
async def add_documents(req: BatchAddRequest, request: Request, b: BackendDep) -> Response:
    def run(s: Store) -> Response:
        return JSONResponse(validated(IngestSummaryOut, s.add_many([_doc(d) for d in req.documents],
                                                                   replace=req.replace)))

    return await b.write(request, run)


@api.post("/documents:delete", response_model=DeleteResponse, tags=["documents"],
          responses=error_responses(404, *WRITE_ERRORS), summary="Delete several documents in one transaction")
async def delete_documents(req: DeleteManyRequest, request: Request, b: BackendDep) -> Response:
    def run(s: Store) -> Response:
        deleted = s.delete_many(req.ids, missing_ok=req.missing_ok)
        return JSONResponse(validated(DeleteResponse, {"chunks_removed": int(deleted)}))

    return await b.write(request, run)


@api.post("/documents", response_model=AddResultOut, status_code=201, tags=["documents"],
          responses={200: {"model": AddResultOut, "description": "Replaced or unchanged (with replace=true)."},
                     201: {"description": "Added."}, **error_responses(*WRITE_ERRORS)},
          summary="Add one document (409 if the id exists, unless replace=true)")
async def add_document(req: AddRequest, request: Request, b: BackendDep) -> Response:
    def run(s: Store) -> Response:
        d = _doc(req)
        return _added(s.add(d.id, d.text, source=d.source, meta=d.meta, vectors=d.vectors, replace=req.replace))

    return await b.write(request, run)


@api.put("/documents/{doc_id:path}", response_model=AddResultOut, tags=["documents"],
         responses={201: {"model": AddResultOut, "description": "Added (the id was new)."},
                    **error_responses(*WRITE_ERRORS)},
         summary="Create or replace a document under this id")
async def put_document(req: DocumentBody, request: Request, doc_id: DocIdPath, b: BackendDep) -> Response:
    def run(s: Store) -> Response:
        vectors = _vectors(req.vectors, f"vectors of document {doc_id!r}")
        return _added(s.add(doc_id, req.text, source=req.source, meta=req.meta, vectors=vectors, replace=True))

    return await b.write(request, run)


@api.patch("/documents/{doc_id:path}", response_model=DocumentInfoOut, tags=["documents"],
           responses=error_responses(404, *WRITE_ERRORS),
           summary="Set a document's metadata without re-embedding it (merge=true: update those keys)")
async def update_meta(req: MetaUpdate, request: Request, doc_id: DocIdPath, b: BackendDep) -> Response:
    def run(s: Store) -> Response:
        return JSONResponse(validated(DocumentInfoOut, s.update_meta(doc_id, req.meta, merge=req.merge)))

    return await b.write(request, run)


@api.delete("/documents/{doc_id:path}", response_model=DeleteResponse, tags=["documents"],
            responses=error_responses(404, *WRITE_ERRORS), summary="Delete a document, its chunks and vectors")
async def delete_document(request: Request, doc_id: DocIdPath, b: BackendDep) -> Response:
    def run(s: Store) -> Response:
        return JSONResponse(validated(DeleteResponse, {"chunks_removed": int(s.delete(doc_id))}))

    return await b.write(request, run)


# ---------------------------------------------------------------------- the schema
@docs.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - API")

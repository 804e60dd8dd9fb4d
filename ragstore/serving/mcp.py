"""A store as Model Context Protocol tools, for LLM apps (Claude Desktop, IDEs ...).

``ragstore mcp STORE [--read-only]`` speaks MCP over stdio with the official
``mcp`` SDK (``pip install 'ragstore[mcp]'``; its 1.x ``FastMCP`` and 2.x
``MCPServer`` both work). Tools:

- ``search(query, k=5, sources=None, exclude_docs=None, min_score=None)``: the
  nearest chunks with their continuations, document ids, sources and scores;
- ``get_document(doc_id)``, ``list_documents(source=None, after=None,
  limit=50)`` (pages with a cursor), ``stats()``;
- unless read-only: ``add_document(doc_id, text, source=None, meta=None,
  replace=False)``, ``update_metadata(doc_id, meta, merge=False)`` and
  ``delete_document(doc_id)``.

``ragstore mcp STORE --http [--host H --port P --token T]`` serves the same
tools over the protocol's Streamable HTTP transport (the SDK's own
``streamable_http_app()``, run by uvicorn) at ``http://H:P/mcp``. With a token
every request but ``GET /health`` needs ``Authorization: Bearer T``, checked by
the HTTP server's own :class:`~ragstore.serving.tokens.BearerAuth` (same 401
body and ``WWW-Authenticate``) before the request reaches the SDK.

A library error comes back as a tool error carrying its message (the model
can read it and correct itself). The process takes the store's writer lock
at its first write and keeps it until it exits.
"""

# No `from __future__ import annotations`: mcp 1.x's FastMCP reads the tool
# functions' annotations as real types.
import logging
import sys
from typing import Any

from .. import Store
from ..embedders.loading import load_embedder
from ..errors import RagstoreError
from .jsonenc import to_jsonable
from .options import McpOptions

__all__ = ["build_server", "http_app", "run_stdio", "run_http"]

log = logging.getLogger("ragstore.mcp")

INSTRUCTIONS = (
    "ragstore: a datastore of text passages (fixed-size chunks of documents). Use `search` to find the "
    "passages most similar to a question or a piece of text; each hit has the passage, its continuation "
    "(the text that follows it in its document), the document id and source. Use `get_document` for a "
    "whole document."
)


def _sdk() -> tuple[Any, Any, Any]:
    """(server class, ToolError, ToolAnnotations) from mcp 2.x or 1.x."""
    try:
        from mcp.server.mcpserver import MCPServer as Server
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp_types import ToolAnnotations
    except ImportError:
        try:
            # mcp 1.x; the type checker sees whichever version is installed
            from mcp.server.fastmcp import FastMCP as Server  # type: ignore[attr-defined,no-redef]
            from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[import-not-found,no-redef]
            from mcp.types import ToolAnnotations
        except ImportError as e:
            raise ImportError(
                f"the ragstore MCP server needs the 'mcp' extra ({e.name} is missing): pip install 'ragstore[mcp]'"
            ) from None
    return Server, ToolError, ToolAnnotations


def build_server(store: Store, *, readonly: bool = False, name: str = "ragstore") -> Any:
    """The MCP server object (not started) exposing ``store`` as tools."""
    Server, ToolError, ToolAnnotations = _sdk()
    server = Server(name, instructions=INSTRUCTIONS)
    readonly = readonly or store.readonly

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RagstoreError as e:  # the model's mistake to read and correct
            raise ToolError(f"{type(e).__name__}: {e}") from None

    @server.tool(
        description="Search the store: the k passages most similar to `query` (best first), each with its "
        "continuation, document id, source, position and score. `sources` limits the search to these "
        "sources; `exclude_docs` leaves these documents out; `min_score` drops hits scoring below it.",
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    )
    def search(
        query: str, k: int = 5, sources: list[str] | None = None, exclude_docs: list[str] | None = None,
        min_score: float | None = None,
    ) -> dict[str, Any]:
        hits = call(store.query, query, k, sources=sources, exclude_docs=exclude_docs, min_score=min_score)
        return to_jsonable({"hits": hits})  # meta written by the library may hold bytes

    @server.tool(
        description="A whole stored document by id: its text, source and metadata.",
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    )
    def get_document(doc_id: str) -> dict[str, Any]:
        d = call(store.get, doc_id)
        return {"id": d.id, "source": d.source, "meta": to_jsonable(d.meta), "text": d.text,
                "n_chunks": d.n_chunks, "n_tokens": d.n_tokens}

    @server.tool(
        description="List stored documents (id, source, metadata, chunk count; no text) in id order, `limit` "
        "at a time; pass the answer's `next_cursor` as `after` for the next page (null: no more). `source` "
        "lists one source's documents ('' those without one).",
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    )
    def list_documents(source: str | None = None, after: str | None = None, limit: int = 50) -> dict[str, Any]:
        return to_jsonable(call(store.list_documents, source=source, after=after, limit=limit).to_dict())

    @server.tool(
        description="Counts and sizes of the store: documents, chunks, tokens, chunks per source.",
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    )
    def stats() -> dict[str, Any]:
        return to_jsonable(call(store.stats))

    if not readonly:

        @server.tool(
            description="Add a document: it is cut into chunks, embedded and stored. An existing `doc_id` is "
            "an error unless `replace` is true. `meta` is a JSON object kept with the document.",
            annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True,
                                        openWorldHint=False),
        )
        def add_document(
            doc_id: str, text: str, source: str | None = None, meta: dict[str, Any] | None = None,
            replace: bool = False,
        ) -> dict[str, Any]:
            r = call(store.add, doc_id, text, source=source, meta=meta, replace=replace)
            return {"doc_id": r.doc_id, "status": r.status, "n_chunks": r.n_chunks}

        @server.tool(
            description="Set a document's metadata (a JSON object) without re-embedding it; with `merge` "
            "true only these keys change.",
            annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True,
                                        openWorldHint=False),
        )
        def update_metadata(doc_id: str, meta: dict[str, Any], merge: bool = False) -> dict[str, Any]:
            return to_jsonable(call(store.update_meta, doc_id, meta, merge=merge).to_dict())

        @server.tool(
            description="Delete a document, its chunks and vectors, by id.",
            annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True,
                                        openWorldHint=False),
        )
        def delete_document(doc_id: str) -> dict[str, Any]:
            return {"doc_id": doc_id, "chunks_removed": call(store.delete, doc_id)}

    return server


def run_stdio(
    path: str,
    *,
    readonly: bool = False,
    embedder: Any = None,
    lock_timeout: float = 10.0,
) -> None:
    """Open the store at ``path`` and serve it over stdio until the client hangs up."""
    # stdout carries the protocol: anything else goes to stderr
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    Server, _, _ = _sdk()  # a missing extra is reported before the store is opened
    store = Store(path, create=False, readonly=readonly, embedder=load_embedder(embedder), lock_timeout=lock_timeout)
    try:
        _ = store.embedder  # load the model before the first request
        build_server(store, readonly=readonly).run("stdio")
    finally:
        store.close()


class _TokenGate:
    """ASGI middleware before the SDK's app: ``GET /health`` answered, the bearer token checked.

    Lifespan events pass through untouched (the SDK's session manager starts
    and stops with them)."""

    def __init__(self, app: Any, token: str | None) -> None:
        from .tokens import BearerAuth

        self.app = app
        self.auth = BearerAuth(token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            from starlette.responses import Response

            from . import jsonenc
            from .tokens import OPEN_PATHS

            if scope["path"] in OPEN_PATHS:
                body = jsonenc.dumps({"status": "ok"}).encode("utf-8")
                await Response(body, media_type="application/json")(scope, receive, send)
                return
            header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
            if not self.auth.accepts_header(header):
                await self.auth.refusal()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(store: Store, opts: McpOptions) -> Any:
    """The ASGI app serving ``store``'s tools over Streamable HTTP at ``opts.path``, token-checked."""
    server = build_server(store, readonly=opts.readonly)
    try:  # mcp 2.x (and late 1.x): the transport's settings as arguments
        app = server.streamable_http_app(streamable_http_path=opts.path, host=opts.host)
    except TypeError:  # mcp 1.x: from the server's settings
        server.settings.streamable_http_path = opts.path
        app = server.streamable_http_app()
    return _TokenGate(app, opts.token)


def run_http(opts: McpOptions) -> None:
    """Open the store of ``opts`` and serve it over Streamable HTTP until interrupted."""
    import uvicorn

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    _sdk()  # a missing extra is reported before the store is opened
    store = Store(opts.store, create=False, readonly=opts.readonly, embedder=load_embedder(opts.embedder),
                  lock_timeout=opts.lock_timeout)
    try:
        _ = store.embedder  # load the model before the first request
        app = http_app(store, opts)
        print(f"ragstore: MCP over Streamable HTTP at http://{opts.host}:{opts.port}{opts.path}", file=sys.stderr)
        uvicorn.run(app, host=opts.host, port=opts.port, log_level=opts.log_level)
    finally:
        store.close()

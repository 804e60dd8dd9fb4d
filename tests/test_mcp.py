"""`ragstore mcp STORE`: Model Context Protocol over stdio, driven by the SDK's own client.

Skipped cleanly when the 'mcp' extra is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

import ragstore  # noqa: E402
from helpers import HashEmbedder  # noqa: E402

TESTS = Path(__file__).resolve().parent
WRAPPER = (
    "from ragstore_cli.app import app, main\n"
    "from ragstore_cli.serve_cmds import register\n"
    "register(app)\n"
    "main()\n"
)


def cli_args() -> list[str]:
    """argv after the interpreter for `ragstore` with its `mcp` command."""
    from ragstore_cli.app import app

    if "mcp" in {c.name or c.callback.__name__ for c in app.registered_commands}:
        return ["-m", "ragstore"]
    return ["-c", WRAPPER]  # until cli/app.py registers serve_cmds


def params(store: Path, *extra: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "LANG", "TMPDIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return StdioServerParameters(
        command=sys.executable,
        args=cli_args() + ["mcp", str(store), "--embedder", "helpers:HashEmbedder", *extra],
        env=env,
    )


def is_error(result) -> bool:
    return bool(getattr(result, "is_error", getattr(result, "isError", False)))


def payload(result) -> dict:
    assert not is_error(result), result.content
    return json.loads(result.content[0].text)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


@pytest.fixture()
def store_path(tmp_path):
    path = tmp_path / "store"
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16) as s:
        s.add("cats", "the cat sat on the mat and purred", source="pets", meta={"legs": 4})
        s.add("ships", "a cargo ship crossed the ocean at night", source="sea")
    return path


def test_tools_search_add_delete(store_path):
    async def session():
        async with stdio_client(params(store_path)) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                names = {t.name for t in (await s.list_tools()).tools}
                assert names == {"search", "get_document", "list_documents", "stats", "add_document",
                                 "update_metadata", "delete_document"}

                hits = payload(await s.call_tool("search", {"query": "the cat sat on the mat", "k": 1}))["hits"]
                assert hits[0]["doc_id"] == "cats" and hits[0]["meta"] == {"legs": 4}
                assert hits[0]["text"].startswith("the cat")

                added = payload(await s.call_tool(
                    "add_document", {"doc_id": "owls", "text": "owls hunt mice at night", "source": "birds"}))
                assert added == {"doc_id": "owls", "status": "added", "n_chunks": 1}
                hits = payload(await s.call_tool("search", {"query": "owls hunt mice", "k": 1, "sources": ["birds"]}))
                assert hits["hits"][0]["doc_id"] == "owls"

                dup = await s.call_tool("add_document", {"doc_id": "owls", "text": "again"})
                assert is_error(dup) and "AlreadyExistsError" in dup.content[0].text
                assert "Traceback" not in dup.content[0].text

                assert payload(await s.call_tool("delete_document", {"doc_id": "owls"}))["chunks_removed"] == 1
                gone = await s.call_tool("get_document", {"doc_id": "owls"})
                assert is_error(gone) and "NotFoundError" in gone.content[0].text
                assert payload(await s.call_tool("stats", {}))["documents"] == 2

                page = payload(await s.call_tool("list_documents", {"limit": 1}))
                assert [d["id"] for d in page["documents"]] == ["cats"] and page["next_cursor"] == "cats"
                page = payload(await s.call_tool("list_documents", {"after": "cats"}))
                assert [d["id"] for d in page["documents"]] == ["ships"] and page["next_cursor"] is None
                meta = payload(await s.call_tool("update_metadata", {"doc_id": "cats", "meta": {"tail": True},
                                                                     "merge": True}))
                assert meta["meta"] == {"legs": 4, "tail": True}
                missing = await s.call_tool("update_metadata", {"doc_id": "nope", "meta": {}})
                assert is_error(missing) and "NotFoundError" in missing.content[0].text
                far = payload(await s.call_tool("search", {"query": "the cat sat", "min_score": 1.5}))
                assert far["hits"] == []

                bad = await s.call_tool("search", {"query": "  "})
                assert is_error(bad) and "InvalidInputError" in bad.content[0].text

    run(session())
    # the server closed the store on exit: it opens again, with what was committed
    with ragstore.open(store_path, embedder=HashEmbedder(), readonly=True) as st:
        assert sorted(st.doc_ids()) == ["cats", "ships"]


def test_read_only_exposes_only_reads(store_path):
    async def session():
        async with stdio_client(params(store_path, "--read-only")) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                names = {t.name for t in (await s.list_tools()).tools}
                assert names == {"search", "get_document", "list_documents", "stats"}
                doc = payload(await s.call_tool("get_document", {"doc_id": "ships"}))
                assert doc["text"] == "a cargo ship crossed the ocean at night" and doc["source"] == "sea"
                refused = await s.call_tool("add_document", {"doc_id": "x", "text": "y"})
                assert is_error(refused)

    run(session())


def test_missing_store_is_a_clean_error(tmp_path):
    import subprocess

    p = params(tmp_path / "none")
    r = subprocess.run([p.command, *p.args], env={**os.environ, **p.env}, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert "error:" in r.stderr and "no ragstore store" in r.stderr and "Traceback" not in r.stderr

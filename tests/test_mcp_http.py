"""`ragstore mcp STORE --http`: MCP over Streamable HTTP in a real server process,
driven by the SDK's own Streamable HTTP client; the bearer token checked as by `ragstore serve`.

Skipped cleanly when the 'mcp' extra is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp import ClientSession  # noqa: E402

import ragstore  # noqa: E402
from helpers import HashEmbedder  # noqa: E402
from test_mcp import cli_args, is_error, payload  # noqa: E402

TESTS = Path(__file__).resolve().parent
TOKEN = "s3cret-token"


def http_client(url: str, token: str | None):
    """The SDK's Streamable HTTP client (2.x ``streamable_http_client``, 1.x ``streamablehttp_client``)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client
    except ImportError:  # mcp 1.x
        from mcp.client.streamable_http import streamablehttp_client

        return streamablehttp_client(url, headers=headers)
    return streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str | None = None, method: str = "GET", body: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, method=method, data=body)
    if token is not None:
        req.add_header("Authorization", token)
    req.add_header("Accept", "application/json, text/event-stream")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture()
def server(tmp_path):
    """(base URL, process) of `ragstore mcp STORE --http --token TOKEN` on a free port."""
    path = tmp_path / "store"
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16) as s:
        s.add("cats", "the cat sat on the mat and purred", source="pets", meta={"legs": 4})
        s.add("ships", "a cargo ship crossed the ocean at night", source="sea")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAGSTORE_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, *cli_args(), "mcp", str(path), "--http", "--port", str(port), "--token", TOKEN,
         "--embedder", "helpers:HashEmbedder", "--log-level", "warning"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if get(base + "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not start")
            time.sleep(0.2)
        yield base, proc, path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


def test_tools_over_streamable_http(server):
    base, proc, path = server

    async def session():
        async with http_client(base + "/mcp", TOKEN) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                names = {t.name for t in (await s.list_tools()).tools}
                assert names == {"search", "get_document", "list_documents", "stats", "add_document",
                                 "update_metadata", "delete_document"}
                hits = payload(await s.call_tool("search", {"query": "the cat sat on the mat", "k": 1}))["hits"]
                assert hits[0]["doc_id"] == "cats" and hits[0]["meta"] == {"legs": 4}
                added = payload(await s.call_tool(
                    "add_document", {"doc_id": "owls", "text": "owls hunt mice at night", "source": "birds"}))
                assert added == {"doc_id": "owls", "status": "added", "n_chunks": 1}
                hits = payload(await s.call_tool("search", {"query": "owls hunt mice", "k": 1, "sources": ["birds"]}))
                assert hits["hits"][0]["doc_id"] == "owls"
                gone = await s.call_tool("get_document", {"doc_id": "nope"})
                assert is_error(gone) and "NotFoundError" in gone.content[0].text

    run(session())
    proc.terminate()
    proc.wait(timeout=30)
    # the server closed the store on exit, with what was committed
    with ragstore.open(path, embedder=HashEmbedder(), readonly=True) as st:
        assert sorted(st.doc_ids()) == ["cats", "owls", "ships"]


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic " + TOKEN, TOKEN, "Bearer"])
def test_missing_or_wrong_token_is_401(server, auth):
    base = server[0]
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode()
    status, headers, body = get(base + "/mcp", auth, method="POST", body=init)
    assert status == 401
    assert headers.get("WWW-Authenticate", headers.get("www-authenticate")) == 'Bearer realm="ragstore"'
    assert json.loads(body)["error"] == "Unauthorized"
    # the same body as `ragstore serve` (one BearerAuth)
    assert "Authorization: Bearer TOKEN" in json.loads(body)["message"]


def test_sdk_client_with_wrong_token_fails(server):
    base = server[0]

    async def session():
        async with http_client(base + "/mcp", "wrong") as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()

    # the SDK reports the 401 as a failed initialize (2.x: an MCPError in an ExceptionGroup,
    # 1.x: an httpx error); the raw 401 is checked above
    with pytest.raises(BaseException):  # noqa: B017
        run(session())


def test_health_needs_no_token(server):
    status, _, body = get(server[0] + "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}

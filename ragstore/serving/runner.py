"""Running the HTTP app: one process, or workers and one writer process.

``workers == 1``: this process serves everything and takes the store's writer
lock at its first write.

``workers > 1``: uvicorn's supervisor starts the worker processes (and
restarts one that dies); each opens the store read-only and forwards writes
to one writer process over a Unix socket in a private (0700) folder. The
writer is started through the CLI's hidden ``serve-writer`` command;
:class:`WriterProcess` restarts it when it dies (clients get 503 meanwhile)
and stops the server with a clear message when it cannot. Workers and writer
get their configuration through one channel: the :class:`ServeOptions` JSON
in ``$RAGSTORE_SERVER_CONFIG``, never argv.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from .. import Store
from ..embedders.loading import load_embedder
from ..errors import InvalidInputError, RagstoreError
from .backend import WRITER_BASE_URL
from .middleware import configure_logging
from .options import ENV_CONFIG, ServeOptions

__all__ = ["serve", "run", "run_writer", "configure_logging", "WriterProcess", "WRITER_COMMAND"]

log = logging.getLogger("ragstore.serving.http")

# the CLI's hidden command that runs the writer (cli/serve_cmds.py)
WRITER_COMMAND = "serve-writer"
WRITER_START_TIMEOUT = 600.0  # it loads the vector index: minutes for a large store
MAX_FAILED_STARTS = 3  # in a row, before the server gives up and stops


def serve(
    store: str | os.PathLike[str] | Store,
    *,
    host: str = ServeOptions.host,
    port: int = ServeOptions.port,
    workers: int = ServeOptions.workers,
    readonly: bool = ServeOptions.readonly,
    token: str | None = None,
    embedder: Any = None,
    lock_timeout: float = ServeOptions.lock_timeout,
    max_body_bytes: int = ServeOptions.max_body_bytes,
    log_level: str = ServeOptions.log_level,
    access_log: bool = ServeOptions.access_log,
    uds: str | None = None,
    threads: int | None = None,
    keep_alive: float = ServeOptions.keep_alive,
) -> None:
    """Serve ``store`` over HTTP until interrupted (SIGINT / SIGTERM).

    ``workers > 1`` needs the store's path and ``embedder`` as a spec string
    (e.g. "module:attr"), since each process opens the store and loads its own.
    """
    if not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
    if workers > 1 and (isinstance(store, Store) or (embedder is not None and not isinstance(embedder, str))):
        raise InvalidInputError(
            "with workers > 1 each process opens the store itself: pass the store's path and the embedder "
            "as a spec string ('minilm', 'module:attr' ...), not objects"
        )
    opts = ServeOptions(
        store=store.path if isinstance(store, Store) else os.fspath(store), host=host, port=port, uds=uds,
        workers=workers, readonly=readonly, token=token, embedder=embedder if isinstance(embedder, str) else None,
        lock_timeout=lock_timeout, max_body_bytes=max_body_bytes, threads=threads, keep_alive=keep_alive,
        log_level=log_level, access_log=access_log,
    )
    run(opts, store=store if isinstance(store, Store) else None,
        embedder=None if isinstance(embedder, str) else embedder)


def run(opts: ServeOptions, *, store: Store | None = None, embedder: Any = None) -> None:
    """Serve as ``opts`` says; ``store`` / ``embedder``: objects for a one-process server."""
    import uvicorn

    from .app import create_app

    _exit_cleanly_on_sigterm()
    configure_logging(opts.log_level)
    where: dict[str, Any] = {"uds": opts.uds} if opts.uds else {"host": opts.host, "port": opts.port}
    common: dict[str, Any] = {"log_level": opts.log_level, "access_log": opts.access_log,
                              "timeout_keep_alive": int(opts.keep_alive), **where}
    if opts.workers == 1:
        # opened here, not at the app's startup: a missing store or model is a clean error, not a traceback
        st = store if store is not None else Store(
            opts.store, create=False, readonly=opts.readonly, embedder=load_embedder(embedder or opts.embedder),
            lock_timeout=opts.lock_timeout,
        )
        try:
            _ = st.embedder
            app = create_app(st, readonly=opts.readonly, token=opts.token, lock_timeout=opts.lock_timeout,
                             max_body_bytes=opts.max_body_bytes, threads=opts.threads)
            uvicorn.run(app, **common)
        finally:
            if st is not store:
                st.close()
        return
    path = os.path.abspath(opts.store)
    with Store(path, create=False, readonly=True, embedder=load_embedder(opts.embedder)) as st:
        _ = st.embedder  # fail here, once, rather than in every worker
    opts = opts.replace(store=path)
    sockdir = tempfile.mkdtemp(prefix="ragstore-writer-")  # 0700: only this user reaches the writer
    writer: WriterProcess | None = None
    try:
        if not opts.readonly:
            writer = WriterProcess(opts, os.path.join(sockdir, "writer.sock"))
            writer.start()
            writer.supervise()
            opts = opts.replace(writer_uds=writer.uds)
        opts.to_env(os.environ)  # uvicorn's worker processes inherit it
        uvicorn.run("ragstore.serving.app:app_from_env", factory=True, workers=opts.workers, **common)
    finally:
        os.environ.pop(ENV_CONFIG, None)
        if writer is not None:
            writer.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
    if writer is not None and writer.failure is not None:
        raise RagstoreError(writer.failure)


def run_writer() -> None:
    """The writer process (``ragstore serve-writer``): options from ``$RAGSTORE_SERVER_CONFIG``."""
    if ENV_CONFIG not in os.environ:
        raise RagstoreError(
            f"{WRITER_COMMAND} is the writer process of `ragstore serve --workers N`, which starts it with its "
            f"options in ${ENV_CONFIG}; run `ragstore serve` instead"
        )
    opts = ServeOptions.from_env()
    _watch_parent()
    run(opts)


class WriterProcess:
    """The one process that writes the store, for the workers of ``opts``.

    It serves the same app on the Unix socket ``uds``, with no token (the
    workers check it; the socket's folder is private) and no access log."""

    def __init__(self, opts: ServeOptions, uds: str) -> None:
        self.uds = uds
        self._opts = opts.replace(uds=uds, workers=1, token=None, writer_uds=None, access_log=False)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: str | None = None  # why the server stopped, when the writer could not be restarted

    def start(self) -> None:
        """Start the writer and wait until it answers (raises if it cannot start)."""
        if os.path.exists(self.uds):
            os.unlink(self.uds)  # left by a writer that was killed
        env = dict(os.environ)
        env[ENV_CONFIG] = self._opts.to_json()
        self._proc = subprocess.Popen([sys.executable, "-m", "ragstore", WRITER_COMMAND], env=env,
                                      stdin=subprocess.DEVNULL)
        self._wait_ready(self._proc, WRITER_START_TIMEOUT)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(transport=httpx.HTTPTransport(uds=self.uds), base_url=WRITER_BASE_URL, timeout=2.0) as c:
            while not self._stopping.is_set():
                if proc.poll() is not None:
                    raise RagstoreError(
                        f"the writer process exited with code {proc.returncode} before it was ready (see its log above)"
                    )
                try:
                    if c.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RagstoreError(f"the writer process did not start within {timeout:.0f}s")
                time.sleep(0.1)
        proc.kill()  # the server is stopping: this writer would be stopped at once
        raise RagstoreError("the server stopped while the writer process was starting")

    def supervise(self) -> None:
        """Restart the writer whenever it dies, in a background thread."""
        self._thread = threading.Thread(target=self._watch, name="ragstore-writer-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        failed = 0
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None or proc.poll() is None:
                self._stopping.wait(0.2)
                continue
            log.error("the writer process [%d] exited with code %s; restarting it (writes answer 503 meanwhile)",
                      proc.pid, proc.returncode)
            try:
                self.start()
                failed = 0
                log.warning("the writer process was restarted")
            except RagstoreError as e:
                if self._stopping.is_set():
                    return
                failed += 1
                log.error("restarting the writer process failed (%d of %d): %s", failed, MAX_FAILED_STARTS, e)
                if failed >= MAX_FAILED_STARTS and not self._stopping.is_set():
                    self.failure = f"the writer process could not be restarted ({e}); the server stopped"
                    log.critical(self.failure)
                    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's supervisor stops the workers
                    return
                self._stopping.wait(1.0 * failed)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _watch_parent() -> None:
    """The writer ends itself if the serving process disappears (killed with SIGKILL)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="ragstore-parent-watch", daemon=True).start()


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn shuts down on SIGTERM, then re-raises it to the handler that was
    there before: make that one exit normally, so the store is closed (and its
    index saved) by the ``finally`` blocks instead of the process dying."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)

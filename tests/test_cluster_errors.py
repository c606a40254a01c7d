"""A wrong `--cluster` or a bad recipe with a cluster: a clear error at once, never a
traceback or a hang.

Each peer here is a real socket on 127.0.0.1: nothing listening, an HTTP-like server
that answers with a status line (what a wrong port, Dask's dashboard among them, does),
and one that accepts and says nothing.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, repro

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_recipe(tmp_path_factory.mktemp("errors-demo"))


@contextlib.contextmanager
def peer(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that treats each connection with ``answer``."""
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        srv.close()
        for conn in held:
            conn.close()


def _http(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def _silent(conn: socket.socket) -> None:
    pass  # accepted, held open, never a byte


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _fails_with(res: object, *needles: str) -> str:
    out = res.stdout + res.stderr  # type: ignore[attr-defined]
    assert res.returncode == 2, out  # type: ignore[attr-defined]
    assert "Traceback" not in out and "internal error" not in out, out
    for needle in needles:
        assert needle in out, out
    return str(out)


def test_nothing_listening(demo: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    res = repro("stress", str(demo), "--runs", "3", "--cluster", address, timeout=60)
    _fails_with(res, f"--cluster {address}: nothing listens at", "dask scheduler")


def test_not_an_address(demo: Path) -> None:
    res = repro("bisect", str(demo), "--cluster", "sched-without-port", timeout=60)
    _fails_with(res, "not a scheduler address", "tcp://HOST:PORT")


def test_unknown_host(demo: Path) -> None:
    res = repro("stress", str(demo), "--cluster", "tcp://no-such-host.invalid:8786", timeout=60)
    _fails_with(res, "unknown host no-such-host.invalid")


def test_a_web_server_on_that_port(demo: Path) -> None:
    """Dask reads "HTTP/1.1" as a message length and fails allocating it (MemoryError)."""
    with peer(_http) as address:
        res = repro("stress", str(demo), "--runs", "3", "--cluster", address, timeout=120)
    _fails_with(res, "not a Dask scheduler", "8787 is its dashboard")


def test_a_peer_that_says_nothing(demo: Path) -> None:
    """Dask's handshake has no deadline of its own: without one, this waited forever."""
    with peer(_silent) as address:
        res = repro(
            "amplify", str(demo), "--runs", "2", "--jobs", "1", "--cluster", address,
            env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}, timeout=120,
        )  # fmt: skip
    _fails_with(res, "no Dask answer within 7 s")


@pytest.mark.parametrize("command", ["stress", "bisect", "amplify"])
def test_a_bad_recipe_is_said_before_the_cluster(tmp_path: Path, command: str) -> None:
    """The recipe is read first: its error, not the cluster's, though both are wrong."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nreproducer:\n  command: [true\n")
    address = f"tcp://127.0.0.1:{_free_port()}"
    extra = ["--jobs", "1"] if command == "amplify" else []
    res = repro(command, str(bad), *extra, "--cluster", address, timeout=60)
    out = _fails_with(res, f"{bad.name}:")
    assert "nothing listens" not in out
    res = repro(command, *extra, "--workers", "2", timeout=60) if command != "amplify" else None
    if res is not None:
        _fails_with(res, "give a recipe file")


@pytest.mark.parametrize("where", ["/proc/no-such-dir", "a-file/below"])
def test_a_shared_cache_that_cannot_be_made(demo: Path, tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("")
    path = where if where.startswith("/") else str(tmp_path / where)
    res = repro("stress", str(demo), "--workers", "1", "--shared-cache", path, timeout=60)
    _fails_with(res, f"--shared-cache {path}: cannot make it")


def test_the_worker_probe_travels_by_value_and_compares() -> None:
    import cloudpickle

    from repro.app.worker_check import make_probe, problems

    probe = make_probe()
    # By value: no reference to a repro module, which a worker without repro lacks.
    assert b"repro.app" not in cloudpickle.dumps(probe)
    here = probe()
    assert here["version"] and len(here["digest"]) == 12
    workers = {
        "tcp://a:1": dict(here),
        "tcp://b:1": {"error": "ModuleNotFoundError: No module named 'repro'"},
        "tcp://c:1": {**here, "digest": "000000000000"},
    }
    found = problems(here, workers)
    assert [f.split(":")[1] for f in found] == ["//b", "//c"]
    assert "cannot import repro (ModuleNotFoundError" in found[0]
    assert "code 000000000000" in found[1] and here["digest"] in found[1]
    assert problems(here, {"tcp://a:1": here}) == []

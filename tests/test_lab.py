"""JupyterLab, tested for real: the server `make lab` starts opens a chapter's .py file as a notebook
(the jupytext contents manager) and runs a cell in a kernel it started; and `make lab` works as root
(it passes --allow-root there, and only there)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))[0].name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, token: str, path: str, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return json.loads(text) if text else {}


def _execute(port: int, token: str, kernel: str, code: str, timeout: float = 60.0) -> tuple[str, str]:
    """Run ``code`` in the server's kernel through its websocket; (stdout text, execute_reply status)."""
    websocket = pytest.importorskip("websocket")  # websocket-client, a dependency of jupyter_server
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel}/channels?token={token}",
                                     timeout=timeout)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    out, status, idle, deadline = "", None, False, time.monotonic() + timeout
    while (status is None or not idle) and time.monotonic() < deadline:  # the reply (shell) and the
        msg = json.loads(ws.recv())  # output (iopub) arrive on different channels, in either order
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        elif msg["msg_type"] == "execute_reply":
            status = msg["content"]["status"]
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    ws.close()
    return out, status


@pytest.fixture(scope="module")
def lab_server():
    """`make lab` as a user runs it, headless, on a free localhost port with a token."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            _api(port, token, "status")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                raise AssertionError("JupyterLab did not start:\n" + proc.communicate(timeout=30)[0][-4000:]) from None
            time.sleep(0.5)
    yield port, token, proc
    try:
        _api(port, token, "shutdown", method="POST")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_the_lab_opens_a_chapter_py_file_as_a_notebook(lab_server):
    port, token, _ = lab_server
    model = _api(port, token, f"contents/{CHAPTER}?content=1")
    assert model["type"] == "notebook", f"{CHAPTER} opened as {model['type']}: the jupytext contents manager is off"
    cells = model["content"]["cells"]
    assert any(c["cell_type"] == "markdown" for c in cells) and any(c["cell_type"] == "code" for c in cells)


def test_the_lab_starts_a_kernel_and_runs_a_cell(lab_server):
    port, token, _ = lab_server
    kernel = _api(port, token, "kernels", method="POST", body={"name": "python3"})["id"]
    try:
        out, status = _execute(port, token, kernel, "import contrastive_lab\nprint(6 * 7, contrastive_lab.__name__)")
        assert status == "ok" and out.strip() == "42 contrastive_lab", (status, out)
    finally:
        _api(port, token, f"kernels/{kernel}", method="DELETE")


def test_make_lab_passes_allow_root_only_for_root(tmp_path):
    """Dry runs of `make lab` with a stand-in `id`: as root the launch gets --allow-root and a note, else not."""
    for uid, expected in (("0", True), ("1000", False)):
        bin_dir = tmp_path / f"uid{uid}"
        bin_dir.mkdir()
        (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (bin_dir / "id").chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        dry = subprocess.run(["make", "-n", "-s", "lab"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        launch = [line for line in dry.stdout.splitlines() if "jupyter lab chapters" in line]
        assert launch, dry.stdout + dry.stderr
        assert ("--allow-root" in launch[0]) == expected, (uid, launch)

"""A real ComfyUI server in a subprocess, and a small client for its HTTP API."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from . import comfy_host


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """``python main.py --cpu ...`` with its own base directory, on a loopback port."""

    def __init__(self, base_directory: Path, port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.base = Path(base_directory)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "server.log"
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        root = comfy_host.comfy_root()
        cmd = [
            sys.executable, str(root / "main.py"), "--cpu", "--listen", "127.0.0.1",
            "--port", str(self.port), "--disable-auto-launch", "--disable-api-nodes",
            "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
            *self.extra_args,
        ]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(cmd, cwd=root, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- HTTP ------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict, timeout: float = 30.0) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """POST an API-format prompt; returns (HTTP status, response JSON)."""
        return self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue a prompt and wait for its /history entry (raises on HTTP errors)."""
        status, body = self.queue(prompt)
        if status != 200:
            raise AssertionError(f"/prompt answered {status}: {json.dumps(body, indent=1)}")
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running a prompt:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log_tail()}")


    def run_listening(self, prompt: dict, event: str, timeout: float = 600.0) -> tuple[dict, list[dict]]:
        """``run``, listening on the server's websocket as the browser does: returns the
        /history entry and the data of every ``event`` message sent meanwhile (messages sent
        to every client, as the pack's run report is)."""
        import threading

        import websocket  # websocket-client (requirements-test.txt)

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={uuid.uuid4().hex}", timeout=5)
        received: list[dict] = []
        done = threading.Event()

        def listen():
            while not done.is_set():
                try:
                    message = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                except (websocket.WebSocketConnectionClosedException, OSError):
                    return
                if not isinstance(message, str) or not message:
                    continue  # binary previews, keep-alives
                try:
                    data = json.loads(message)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("type") == event:
                    received.append(data.get("data", {}))

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        try:
            entry = self.run(prompt, timeout)
            time.sleep(0.5)  # messages sent just before the history entry was written
        finally:
            done.set()
            ws.close()
            listener.join(timeout=10)
        return entry, received
    def wait_new_entry(self, known: set, timeout: float = 400.0) -> dict:
        """The first finished /history entry whose id is not in ``known``, for prompts queued
        by someone else (a browser); fails at once if the server refused a prompt."""
        deadline = time.monotonic() + timeout
        log_start = len(self.log_path.read_text(errors="replace"))
        while time.monotonic() < deadline:
            new_log = self.log_path.read_text(errors="replace")[log_start:]
            assert "invalid prompt" not in new_log, new_log  # refused: no history entry will come
            for prompt_id, entry in self.get("/history").items():
                if prompt_id not in known and entry.get("status", {}).get("completed") is not None:
                    return entry
            time.sleep(0.3)
        raise TimeoutError(f"no new /history entry:\n{self.log_tail()}")


def execution_error(entry: dict) -> dict | None:
    """The ``execution_error`` message of a /history entry, if the run failed."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None

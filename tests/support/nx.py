"""A private nx-27017 MongoDB wire server for a test run (or TEST_MONGO_URL, e.g. a real replica set).

Started through the project's launcher `scripts/nxd.py` (nx with its transaction guards: a dead client's open
transaction is rolled back); `NxServer(plain=True)` runs the bare `nx-27017` binary (to show what it lacks)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parents[2] / "scripts" / "nxd.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def nx_binary() -> str:
    candidate = Path(sys.executable).with_name("nx-27017")
    return str(candidate) if candidate.exists() else "nx-27017"


class NxServer:
    """An nx-27017 MongoDB wire server with its own data dir, pid file and log (one per test run)."""

    def __init__(self, data_dir: str | None = None, port: int | None = None, plain: bool = False) -> None:
        self.plain = plain
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="o2o-nx-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> NxServer:
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        program = [nx_binary()] if self.plain else [sys.executable, str(LAUNCHER)]
        self.process = subprocess.Popen(
            [*program, "--data-dir", self.data_dir, "-p", str(self.port), "--pid-file",
             os.path.join(self.data_dir, "nx.pid"), "--log-file", self.log_file],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, process=self.process)
        return self

    @property
    def log_file(self) -> str:
        return os.path.join(self.data_dir, "nx.log")

    def stop(self, keep_data: bool = False) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

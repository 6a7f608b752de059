"""A real ``edge-face run`` with its admin API on a free port, for tests over real TCP.

The daemon is the product's own process (models, gallery, MQTT publisher, uvicorn); the tests
talk to it with httpx, create tokens with the real CLI, and read its JSON log. Nothing in the
API path is replaced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mqtt_broker import Broker, free_port

START_TIMEOUT_S = 90.0


def cli_env(workdir: Path, models_dir: Path, broker: Broker | None,
            **extra: str) -> dict[str, str]:
    """The environment of a device whose data lives in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    config = workdir / "config.toml"
    if not config.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[models]\ndir = "{models_dir}"\n', encoding="utf-8")
    env.update({
        "EDGE_FACE_CONFIG": str(config),
        "EDGE_FACE_DEVICE__ID": "api-door",
        "EDGE_FACE_STORAGE__DATA_DIR": str(workdir / "data"),
        "EDGE_FACE_STORAGE__KEY_FILE": str(workdir / "keys" / "template.key"),
        "EDGE_FACE_STORAGE__FLEET_KEY_FILE": str(workdir / "keys" / "fleet.key"),
        "EDGE_FACE_STORAGE__SIGNING_KEY_FILE": str(workdir / "keys" / "operator.key"),
        "EDGE_FACE_STORAGE__TRUSTED_KEYS_DIR": str(workdir / "keys" / "trusted"),
        "EDGE_FACE_CAMERA__SOURCE": "none",
        "EDGE_FACE_LOGGING__FORMAT": "json",
        "EDGE_FACE_API__ENABLED": "true",
    })
    if broker is not None:
        env.update(broker.env())
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "edge.cli", *args], env=env, input=stdin,
                         capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def cli_json(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    return json.loads(run_cli(env, *args, "--json", stdin=stdin).stdout)


@dataclass
class ApiDaemon:
    workdir: Path
    env: dict[str, str]
    port: int
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    def token(self, name: str, scope: str = "admin") -> str:
        if name not in self.tokens:
            self.tokens[name] = cli_json(self.env, "token", "create", "--name", name,
                                         "--scope", scope)["token"]
        return self.tokens[name]

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60.0, **kwargs)

    def admin(self) -> httpx.Client:
        return self.client(self.token("test-admin"))

    def start(self, wait_ready: bool = False) -> ApiDaemon:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "edge.cli", "run"], env=self.env,
                                        stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"daemon exited with {self.process.returncode}:\n{self.logs()[-4000:]}",
                            pytrace=False)
            try:
                with self.client(verify=False) as c:
                    if c.get(path).status_code == 200:
                        return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"daemon's API did not answer {path} in {START_TIMEOUT_S} s:\n"
                    f"{self.logs()[-4000:]}", pytrace=False)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        code = self.process.returncode
        self.process = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (others, e.g. a traceback, are skipped)."""
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


def make_daemon(workdir: Path, models_dir: Path, broker: Broker | None,
                **extra: str) -> ApiDaemon:
    port = free_port()
    env = cli_env(workdir, models_dir, broker, EDGE_FACE_API__PORT=str(port), **extra)
    return ApiDaemon(workdir, env, port)


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), free_port()).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
            module_broker: Broker) -> Iterator[ApiDaemon]:
    """An enrollment station (no camera) with its API up, shared by one test module."""
    daemon = make_daemon(tmp_path_factory.mktemp("station"), models_dir, module_broker,
                         EDGE_FACE_API__AUTH_FAILURES_PER_MINUTE="1000")
    daemon.start(wait_ready=True)
    yield daemon
    daemon.stop()


def consent(**extra: Any) -> dict[str, Any]:
    return {"given_by": "the person", "purpose": "front door", **extra}


def new_person(client: httpx.Client, label: str | None = "Visitor") -> str:
    r = client.post("/v1/persons", json={"label": label, "consent": consent()})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])

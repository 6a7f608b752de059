"""Who may use the admin API: tokens, their file, failed-login limits, TLS and the listen address.

The token store is tested directly and through the real CLI; revocation, rotation, a damaged
token file and the failure limit are tested against a running daemon over TCP, because "stops
working at once" is a property of the daemon re-reading the file, not of the file.
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from api_daemon import ApiDaemon, cli_env, make_daemon, run_cli
from mqtt_broker import Broker, make_tls_files

from edge.api.auth import FailureLimiter
from edge.api.tokens import TokenError, TokenStore


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / "api-tokens.json")


# --------------------------------------------------------------------------- the token file


def test_a_secret_is_shown_once_and_only_its_hash_is_kept(store: TokenStore) -> None:
    made = store.create("door-panel", "admin")
    secret = made["token"]
    assert secret.startswith("eft_") and len(secret) > 40 and made["changed"]
    text = store.path.read_text()
    assert secret not in text and secret[4:] not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    listed = store.list()["tokens"]
    assert [(t["name"], t["scope"]) for t in listed] == [("door-panel", "admin")]
    assert "token" not in listed[0] and "sha256" not in json.dumps(listed)
    token = store.verify(secret)
    assert token is not None and token.name == "door-panel" and token.allows("read")
    assert store.verify(secret + "x") is None and store.verify("") is None
    assert store.verify("x" * 10_000) is None


def test_read_scope_does_not_pass_for_admin(store: TokenStore) -> None:
    token = store.verify(store.create("dashboard", "read")["token"])
    assert token is not None and token.allows("read") and not token.allows("admin")


def test_names_are_unique_and_stdin_secrets_are_idempotent(store: TokenStore) -> None:
    store.create("panel", "read")
    with pytest.raises(TokenError, match="exists: revoke it first"):
        store.create("panel", "read")
    vault = "v" * 40
    first = store.create("ansible", "admin", vault + "\n")
    assert first["changed"] and "token" not in first  # the operator already has it
    again = store.create("ansible", "admin", vault)
    assert not again["changed"] and again["id"] == first["id"]
    rescoped = store.create("ansible", "read", vault)
    assert rescoped["changed"] and rescoped["scope"] == "read"
    with pytest.raises(TokenError, match="already used by another token"):
        store.create("other", "admin", vault)
    with pytest.raises(TokenError, match="32-"):
        store.create("short", "admin", "too short")
    with pytest.raises(TokenError, match="printable ASCII"):
        store.create("spaces", "admin", "a secret with spaces in it, long enough!")
    assert {t.name for t in store.tokens()} == {"panel", "ansible"}


def test_rotate_and_revoke_act_at_once(store: TokenStore) -> None:
    old = store.create("kiosk", "admin")["token"]
    new = store.rotate("kiosk")["token"]
    assert store.verify(old) is None and store.verify(new) is not None
    gone = store.revoke("kiosk")
    assert gone["name"] == "kiosk" and store.verify(new) is None
    with pytest.raises(TokenError, match="no token named 'kiosk'"):
        store.revoke("kiosk")


@pytest.mark.parametrize("damage", ["garbage", "wrong format", "short digest", "mode 0644"])
def test_a_damaged_or_unsafe_file_fails_closed(store: TokenStore, damage: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    secret = store.create("panel", "admin")["token"]
    doc = json.loads(store.path.read_text())
    if damage == "garbage":
        store.path.write_text("{not json")
    elif damage == "wrong format":
        store.path.write_text(json.dumps({"format": 99, "tokens": doc["tokens"]}))
    elif damage == "short digest":
        doc["tokens"][0]["sha256"] = "abcd"
        store.path.write_text(json.dumps(doc))
    else:
        store.path.chmod(0o644)
    reader = TokenStore(store.path)
    assert reader.verify(secret) is None  # nobody gets in, not even with a once-good token
    assert "every request is refused" in caplog.text
    with pytest.raises(TokenError):
        reader.list()


def test_concurrent_creates_from_many_processes_lose_nothing(tmp_path: Path,
                                                             models_dir: Path) -> None:
    env = cli_env(tmp_path, models_dir, None)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: run_cli(env, "token", "create", "--name", f"t{i}",
                                               "--scope", "read", "--json"), range(8)))
    secrets = [json.loads(o.stdout)["token"] for o in outs]
    listed = json.loads(run_cli(env, "token", "list", "--json").stdout)["tokens"]
    assert sorted(t["name"] for t in listed) == [f"t{i}" for i in range(8)]
    store = TokenStore(Path(env["EDGE_FACE_STORAGE__DATA_DIR"]) / "api-tokens.json")
    assert all(store.verify(s) is not None for s in secrets)


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path: Path, models_dir: Path) -> None:
    env = cli_env(tmp_path, models_dir, None)
    out = run_cli(env, "token", "revoke", "nobody", check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("edge-face: error: ") and "no token named 'nobody'" in out.stderr
    assert out.stderr.count("\n") == 1
    made = run_cli(env, "token", "create", "--name", "ops", "--scope", "admin")
    assert "store it now: it is not shown again" in made.stdout
    table = run_cli(env, "token", "list").stdout
    assert "ops" in table and "eft_" not in table
    piped = run_cli(env, "token", "create", "--name", "vault", "--scope", "read", "--stdin",
                    "--json", stdin="s" * 48)
    assert json.loads(piped.stdout)["changed"] is True
    again = run_cli(env, "token", "create", "--name", "vault", "--scope", "read", "--stdin",
                    "--json", stdin="s" * 48)
    assert json.loads(again.stdout)["changed"] is False


def test_failure_limiter_blocks_then_refills() -> None:
    now = [0.0]
    limiter = FailureLimiter(3, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.blocked_for("10.0.0.9") == 0
        limiter.failed("10.0.0.9")
    assert limiter.blocked_for("10.0.0.9") == 20  # one failure back every 60/3 s
    assert limiter.blocked_for("10.0.0.8") == 0  # others are not punished
    now[0] = 20.0
    assert limiter.blocked_for("10.0.0.9") == 0


# --------------------------------------------------------------------------- a running daemon


def test_revoked_and_rotated_tokens_stop_working_on_the_next_request(station: ApiDaemon) -> None:
    secret = station.token("short-lived")
    with station.client(secret) as api:
        assert api.get("/v1/persons").status_code == 200
        run_cli(station.env, "token", "revoke", "short-lived")
        refused = api.get("/v1/persons")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    old = station.token("rotating")
    new = json.loads(run_cli(station.env, "token", "rotate", "rotating", "--json").stdout)["token"]
    with station.client(old) as stale, station.client(new) as fresh:
        assert stale.get("/v1/persons").status_code == 401
        assert fresh.get("/v1/persons").status_code == 200


def test_bad_credentials_are_401_whatever_their_shape(station: ApiDaemon) -> None:
    with station.client() as anon:
        assert anon.get("/v1/persons").json()["detail"] == "a bearer token is required"
        for header in ("Bearer", "Basic dXNlcjpwYXNz", "Bearer " + "A" * 5000,
                       "Bearer eft_" + "x" * 43, "bearer"):
            r = anon.get("/v1/persons", headers={"Authorization": header})
            assert r.status_code == 401, (header, r.text)
            assert "Bearer" in r.headers.get("www-authenticate", "Bearer"), header


def test_a_damaged_token_file_refuses_everyone_until_repaired(station: ApiDaemon) -> None:
    secret = station.token("survivor")
    path = Path(station.env["EDGE_FACE_STORAGE__DATA_DIR"]) / "api-tokens.json"
    good = path.read_bytes()
    try:
        path.write_bytes(b"\x00garbage")
        with station.client(secret) as api:
            assert api.get("/v1/persons").status_code == 401
            assert api.get("/healthz").status_code == 200  # alive, just locked
    finally:
        path.write_bytes(good)
        path.chmod(0o600)
    with station.client(secret) as api:
        assert api.get("/v1/persons").status_code == 200
    assert any(r.get("msg") == "api tokens unusable; every request is refused"
               for r in station.records())


def test_repeated_failures_from_one_client_are_slowed_down(tmp_path: Path, models_dir: Path,
                                                           module_broker: Broker) -> None:
    daemon = make_daemon(tmp_path, models_dir, module_broker,
                         EDGE_FACE_API__AUTH_FAILURES_PER_MINUTE="3").start()
    try:
        good = daemon.token("operator")
        with daemon.client("wrong-" + "x" * 40) as guess:
            statuses = [guess.get("/v1/persons").status_code for _ in range(5)]
            assert statuses == [401, 401, 401, 429, 429]
            blocked = guess.get("/v1/persons")
            assert int(blocked.headers["retry-after"]) >= 1
        with daemon.client(good) as api:  # the same address: no more guesses, good or not
            assert api.get("/v1/persons").status_code == 429
            assert api.get("/healthz").status_code == 200
        # Per client: another address (all of 127.0.0.0/8 is this host) is not held back.
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with daemon.client(good, transport=other) as neighbour:
            assert neighbour.get("/v1/persons").status_code == 200
        access = [r for r in daemon.records() if r.get("logger") == "edge.api.access"]
        assert {r["client"] for r in access if r["status"] == 429} == {"127.0.0.1"}
    finally:
        daemon.stop()


# --------------------------------------------------------------------------- where it listens


def config_check(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "config", "check"],
                          env={**env, **extra}, capture_output=True, text=True, timeout=60)


def test_a_lan_address_needs_tls_or_an_explicit_opt_out(tmp_path: Path, models_dir: Path) -> None:
    env = cli_env(tmp_path, models_dir, None)
    refused = config_check(env, EDGE_FACE_API__HOST="0.0.0.0")
    assert refused.returncode == 78, refused.stderr
    assert "tls_cert" in refused.stderr and "allow_insecure" in refused.stderr
    assert config_check(env, EDGE_FACE_API__HOST="0.0.0.0",
                        EDGE_FACE_API__ALLOW_INSECURE="true").returncode == 0
    half = config_check(env, EDGE_FACE_API__TLS_CERT=str(tmp_path / "c.pem"))
    assert half.returncode == 78 and "tls_key" in half.stderr
    assert config_check(env, EDGE_FACE_API__HOST="::1").returncode == 0  # loopback, v6


def test_tls_serves_https_and_nothing_in_clear(tmp_path: Path, models_dir: Path,
                                               module_broker: Broker) -> None:
    pki = make_tls_files(tmp_path / "pki")
    daemon = make_daemon(tmp_path / "dev", models_dir, module_broker,
                         EDGE_FACE_API__TLS_CERT=str(pki.server_cert),
                         EDGE_FACE_API__TLS_KEY=str(pki.server_key))
    daemon.scheme = "https"
    daemon.start()
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with httpx.Client(base_url=daemon.base_url, verify=ctx,
                          headers={"Authorization": f"Bearer {daemon.token('tls')}"}) as api:
            assert api.get("/v1/persons").status_code == 200
        with pytest.raises(httpx.HTTPError), httpx.Client(verify=True) as untrusting:
            untrusting.get(daemon.base_url + "/healthz")  # not a publicly trusted certificate
        with pytest.raises(httpx.HTTPError), httpx.Client() as clear:
            clear.get(f"http://127.0.0.1:{daemon.port}/healthz")
    finally:
        daemon.stop()


def test_a_port_in_use_stops_the_daemon_with_a_clear_error(tmp_path: Path, models_dir: Path,
                                                           module_broker: Broker) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env(tmp_path, models_dir, module_broker, EDGE_FACE_API__PORT=str(port))
        out = subprocess.run([sys.executable, "-m", "edge.cli", "run"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in out.stdout + out.stderr



def test_the_listening_socket_is_tcp_so_answers_are_not_held_back() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP; with proto 0 every
    keep-alive answer waited ~40 ms for a delayed ACK (found by bench/bench_api.py)."""
    from edge.api.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()

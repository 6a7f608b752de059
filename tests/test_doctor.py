"""``edge-face doctor`` on this machine: real models, a real mosquitto, real files.

No GPU, TensorRT or CUDA exist here, so the GPU backends must show up as unavailable with their
reasons while the run still passes on the CPU backend.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mqtt_broker import Broker, broker_factory, free_port, mqtt_broker  # noqa: F401  (fixtures)

from edge.cli import main
from edge.doctor import JETPACK, parse_tegra_release, system_info


def _config(tmp_path: Path, models_dir: Path, port: int, extra: str = "") -> Path:
    data, keys = tmp_path / "data", tmp_path / "keys"
    data.mkdir(mode=0o750)
    keys.mkdir(mode=0o700)
    key = keys / "template.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(f'[models]\ndir = "{models_dir}"\n'
                    f'[storage]\ndata_dir = "{data}"\nkey_file = "{key}"\n'
                    f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                    f'[inference]\nengine_dir = "{tmp_path / "engines"}"\n' + extra)
    return path


def _doctor(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = main(["--config", str(config), "doctor", "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_doctor_passes_on_the_cpu_and_says_why_the_gpu_backends_are_unavailable(
        tmp_path: Path, models_dir: Path, mqtt_broker: Broker,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = _doctor(_config(tmp_path, models_dir, mqtt_broker.port), capsys)
    assert code == 0, err
    assert set(report) >= {"backends", "checks", "system"}
    rows = {row["name"]: row for row in report["backends"]}
    assert list(rows) == ["tensorrt", "onnxruntime-gpu", "onnxruntime-cpu"]
    for row in rows.values():
        assert set(row) == {"name", "available", "reason", "latency_ms", "agreement"}
    assert not rows["tensorrt"]["available"]
    assert "TensorRT is not importable" in rows["tensorrt"]["reason"]
    assert not rows["onnxruntime-gpu"]["available"]
    assert "no CUDA or TensorRT execution provider" in rows["onnxruntime-gpu"]["reason"]
    cpu = rows["onnxruntime-cpu"]
    assert cpu["available"] and cpu["reason"] is None
    assert cpu["latency_ms"]["detector"] > 0 and cpu["latency_ms"]["embedder"] > 0
    assert cpu["agreement"]["ok"] and cpu["agreement"]["cosine_min"] >= 0.99
    assert cpu["agreement"]["faces"] == cpu["agreement"]["reference_faces"] >= 1
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"models", "backend", "camera", "broker", "api", "api_tokens",
                           "data_dir", "key_file", "engine_cache", "disk"}
    assert checks["backend"]["status"] == "ok" and "onnxruntime-cpu" in checks["backend"]["detail"]
    assert checks["broker"]["status"] == "ok"
    assert checks["camera"]["status"] == "skip"
    assert checks["key_file"]["status"] == "ok"
    assert report["system"]["python"] and report["system"]["tensorrt"] is None


def test_text_output_lists_backends_and_checks(tmp_path: Path, models_dir: Path,
                                               mqtt_broker: Broker,  # noqa: F811
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, models_dir, mqtt_broker.port)
    assert main(["--config", str(config), "doctor"]) == 0
    out = capsys.readouterr().out
    assert "tensorrt         unavailable: TensorRT is not importable" in out
    assert "agrees with the CPU fp32 reference" in out
    assert "ok    broker" in out


def test_failing_checks_are_named_and_exit_non_zero(tmp_path: Path, models_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, models_dir, free_port())  # nothing listens there
    (tmp_path / "keys" / "template.key").chmod(0o644)
    code, report, err = _doctor(config, capsys)
    assert code == 1
    failed = {c["name"] for c in report["checks"] if c["status"] == "fail"}
    assert failed == {"broker", "key_file"}
    assert "failing checks: broker" in err and "key_file" in err and "chmod 600" in err


def test_a_configured_gpu_backend_that_does_not_load_fails_the_run(
        tmp_path: Path, models_dir: Path, mqtt_broker: Broker,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, models_dir, mqtt_broker.port, 'backend = "tensorrt"\n')
    code, report, err = _doctor(config, capsys)
    assert code == 1
    (check,) = [c for c in report["checks"] if c["name"] == "backend"]
    assert check["status"] == "fail" and "TensorRT is not importable" in check["detail"]
    assert "failing checks: backend" in err


def test_a_configured_camera_must_give_a_frame(tmp_path: Path, models_dir: Path,
                                               fixture_dir: Path, mqtt_broker: Broker,  # noqa: F811
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, models_dir, mqtt_broker.port,
                     f'[camera]\nsource = "{fixture_dir}"\n')
    code, report, _ = _doctor(config, capsys)
    (check,) = [c for c in report["checks"] if c["name"] == "camera"]
    assert code == 0 and check["status"] == "ok" and "frame" in check["detail"]


def test_missing_models_are_a_failing_check_not_a_crash(
        tmp_path: Path, mqtt_broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    empty = tmp_path / "no-models"
    empty.mkdir()
    code, report, _ = _doctor(_config(tmp_path, empty, mqtt_broker.port), capsys)
    assert code == 1
    assert all(not b["available"] for b in report["backends"])
    assert {c["name"] for c in report["checks"] if c["status"] == "fail"} >= {"models",
                                                                             "backend"}


@pytest.mark.parametrize(("text", "l4t", "jetpack"), [
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
     "DATE: Wed Jan  8 01:49:37 UTC 2025", "36.4.3", "6.2"),
    ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64", "36.3.0",
     "6.0"),
    ("# R36 (release), REVISION: 4, GCID: 1", "36.4.0", "6.1"),
    ("not a tegra release file", None, None),
])
def test_l4t_release_and_jetpack(tmp_path: Path, text: str, l4t: str | None,
                                 jetpack: str | None) -> None:
    assert parse_tegra_release(text) == l4t
    path = tmp_path / "nv_tegra_release"
    path.write_text(text + "\n")
    info = system_info(path)
    assert (info["l4t"], info["jetpack"]) == (l4t, jetpack)
    assert JETPACK.get(l4t or "") == jetpack


def _checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_api_checks_skip_when_the_api_is_off(tmp_path: Path, models_dir: Path,
                                             mqtt_broker: Broker,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _, report, _ = _doctor(_config(tmp_path, models_dir, mqtt_broker.port), capsys)
    assert _checks(report)["api"]["status"] == _checks(report)["api_tokens"]["status"] == "skip"


def test_api_checks_see_tokens_tls_and_the_port(tmp_path: Path, models_dir: Path,
                                                mqtt_broker: Broker,  # noqa: F811
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import http.server
    import threading

    port = free_port()
    config = _config(tmp_path, models_dir, mqtt_broker.port,
                     f'[api]\nenabled = true\nport = {port}\n')
    code, report, _ = _doctor(config, capsys)
    checks = _checks(report)
    assert code == 0 and checks["api"]["status"] == "ok" and "is free" in checks["api"]["detail"]
    assert checks["api_tokens"]["status"] == "warn"
    assert "edge-face token create" in checks["api_tokens"]["detail"]

    assert main(["--config", str(config), "token", "create", "--name", "ops",
                 "--scope", "admin"]) == 0
    capsys.readouterr()
    _, report, _ = _doctor(config, capsys)
    assert _checks(report)["api_tokens"]["detail"].startswith("1 token(s), 1 admin")
    (tmp_path / "data" / "api-tokens.json").chmod(0o644)
    code, report, err = _doctor(config, capsys)
    assert code == 1 and _checks(report)["api_tokens"]["status"] == "fail"
    assert "chmod 600" in err
    (tmp_path / "data" / "api-tokens.json").chmod(0o600)

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>a printer's admin page</html>")

        def log_message(self, *args: object) -> None:
            pass

    squatter = http.server.HTTPServer(("127.0.0.1", port), Other)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    try:
        code, report, _ = _doctor(config, capsys)
    finally:
        squatter.shutdown()
        squatter.server_close()
    assert code == 1 and "taken by another program" in _checks(report)["api"]["detail"]

    (tmp_path / "bad.pem").write_text("not a certificate")
    (tmp_path / "tls").mkdir()
    bad_tls = _config(tmp_path / "tls", models_dir, mqtt_broker.port,
                      f'[api]\nenabled = true\nport = {port}\n'
                      f'tls_cert = "{tmp_path / "bad.pem"}"\ntls_key = "{tmp_path / "bad.pem"}"\n')
    code, report, _ = _doctor(bad_tls, capsys)
    assert code == 1 and "cannot be loaded" in _checks(report)["api"]["detail"]


def test_api_check_recognises_the_running_daemon(tmp_path: Path, models_dir: Path,
                                                 mqtt_broker: Broker,  # noqa: F811
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from api_daemon import make_daemon

    daemon = make_daemon(tmp_path / "door", models_dir, mqtt_broker).start()
    try:
        config = _config(tmp_path, models_dir, mqtt_broker.port,
                         f'[api]\nenabled = true\nport = {daemon.port}\n')
        _, report, _ = _doctor(config, capsys)
    finally:
        daemon.stop()
    assert _checks(report)["api"] == {"name": "api", "status": "ok", "detail":
                                      f"the daemon's API answers on http://127.0.0.1:"
                                      f"{daemon.port}"}


def test_a_directory_this_user_may_not_enter_is_a_failing_check(
        tmp_path: Path, models_dir: Path, mqtt_broker: Broker,  # noqa: F811
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin outside the service's group running the doctor: a line, not a traceback.
    (The tests run as root, who may enter any directory, so Path.exists is made to answer as
    Python 3.11 does for a user without search permission on the parent.)"""
    config = _config(tmp_path, models_dir, mqtt_broker.port)
    key_path = tmp_path / "keys" / "template.key"
    real_exists = Path.exists

    def exists(self: Path, *args: object, **kwargs: object) -> bool:
        if self == key_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    code, report, _ = _doctor(config, capsys)
    key = {c["name"]: c for c in report["checks"]}["key_file"]
    assert code == 1 and key["status"] == "fail"
    assert key["detail"] == f"Permission denied: {key_path}"

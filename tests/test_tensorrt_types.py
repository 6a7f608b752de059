"""The TensorRT backend type-checks against TensorRT 10's API (tensorrt-stubs), without a GPU.

Why: TensorRT cannot be installed here, so nothing else would notice a call that TensorRT 10
removed (``execute_async_v2``, ``get_binding_*``, ``build_engine``) or a misspelt one until a
device tried it. ``make setup`` puts ``tensorrt-stubs`` (pinned to the 10.x line, JetPack
6.1/6.2) into ``.venv/typing-stubs``; mypy then checks edge/inference/tensorrt.py against it.

The published stubs are generated and do not parse as they are (four parameters named ``in``,
a keyword; one required parameter after defaulted ones; an import of ``tensorrt_libs``, which
is not stubbed). A copy is repaired here, touching only those parameter names and defaults of
plugin and layer methods this project never calls, before mypy reads it.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / ".venv" / "typing-stubs"
MODULE = ROOT / "edge" / "inference" / "tensorrt.py"
MYPY_INI = """\
[mypy]
strict = True
follow_imports = silent
python_version = 3.10
[mypy-tensorrt.*,tensorrt_bindings.*,tensorrt_libs]
ignore_errors = True
"""
# TensorRT 10 removed these; a regression to any of them must fail here.
REMOVED_API = """\
import tensorrt as trt

def old(ctx: trt.IExecutionContext, engine: trt.ICudaEngine, builder: trt.Builder,
        network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> None:
    ctx.execute_async_v2([], 0)
    engine.get_binding_shape(0)
    builder.build_engine(network, config)
"""


def _split_params(text: str) -> list[str]:
    out, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return [*out, current]


def _repair_def(line: str) -> str:
    line = re.sub(r"(?<=[(,] )in(?=: )", "in_", line)
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not match:
        return line
    params, seen_default = [], False
    for param in _split_params(match.group(2)):
        text = param.strip()
        if text.startswith("*"):
            seen_default = seen_default and text != "*"
        elif "=" in text:
            seen_default = True
        elif seen_default and text:
            param += " = ..."
        params.append(param)
    return match.group(1) + ",".join(params) + match.group(3)


def _repair(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for _ in range(200):
        try:
            ast.parse("\n".join(lines), feature_version=(3, 10))
            break
        except SyntaxError as exc:
            index = (exc.lineno or 1) - 1
            fixed = _repair_def(lines[index])
            if fixed == lines[index]:
                raise
            lines[index] = fixed
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (STUBS / "tensorrt" / "__init__.pyi").is_file():
        pytest.fail(f"tensorrt-stubs are missing in {STUBS}: run `make setup`")
    version = next(STUBS.glob("tensorrt_stubs-*.dist-info")).name.split("-")[1]
    assert version.startswith("10."), f"tensorrt-stubs {version} is not the 10.x line"
    out = tmp_path_factory.mktemp("stubs")
    shutil.copytree(STUBS, out, dirs_exist_ok=True)
    for pyi in out.rglob("*.pyi"):
        _repair(pyi)
    (out / "tensorrt_libs.pyi").write_text("")
    (out / "mypy.ini").write_text(MYPY_INI)
    return out


def _mypy(stubs: Path, target: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(stubs / "mypy.ini"),
         "--cache-dir", str(cache), str(target)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
def test_the_tensorrt_backend_type_checks_against_tensorrt_10(stubs: Path) -> None:
    result = _mypy(stubs, MODULE, stubs / ".cache")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_calls_tensorrt_10_removed_fail_the_check(stubs: Path, tmp_path: Path) -> None:
    """Proves the check has teeth: the binding-index API of TensorRT <= 8 is reported."""
    snippet = tmp_path / "old_api.py"
    snippet.write_text(REMOVED_API)
    result = _mypy(stubs, snippet, stubs / ".cache")
    assert result.returncode == 1
    for name in ("execute_async_v2", "get_binding_shape", "build_engine"):
        assert f'has no attribute "{name}"' in result.stdout, result.stdout

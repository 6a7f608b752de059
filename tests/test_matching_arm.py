"""The int8 search library (edge/matching/_int8scan.c) as built for aarch64, run under qemu.

Why: Jetson-class targets are aarch64, but this machine and CI are x86-64, so neither the NEON
dot-product kernel (level 4) nor the portable kernel that Arm CPUs without dot products use
(level 1) would otherwise ever be compiled for Arm or run. ``tests/arm/harness.c`` checks both
against exact integer arithmetic and a float64 brute force, with no Python on the Arm side; it
runs on a CPU with dot products (``-cpu max``) and on one without (``-cpu cortex-a53``), where
the library must pick the portable kernel and refuse level 4 instead of faulting.

Needs ``aarch64-linux-gnu-gcc`` and ``qemu-aarch64`` (Debian: gcc-aarch64-linux-gnu,
libc6-dev-arm64-cross, qemu-user); skipped without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "arm" / "harness.c"
LIBRARY_SOURCE = ROOT / "edge" / "matching" / "_int8scan.c"
CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"

pytestmark = pytest.mark.skipif(
    shutil.which(CC) is None or shutil.which(QEMU) is None,
    reason=f"needs {CC} and {QEMU} on PATH (apt-get install gcc-aarch64-linux-gnu "
    "libc6-dev-arm64-cross qemu-user) to build and emulate the aarch64 library",
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The harness and the library, compiled for aarch64 (static: qemu needs no Arm sysroot)."""
    binary = tmp_path_factory.mktemp("arm") / "harness"
    build = subprocess.run(
        [CC, "-O3", "-std=gnu11", "-static", "-Wall", "-Wextra", "-o", str(binary),
         str(HARNESS), str(LIBRARY_SOURCE), "-lm"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert build.returncode == 0, f"aarch64 build failed:\n{build.stderr}"
    assert build.stderr == "", f"aarch64 build warned:\n{build.stderr}"
    return binary


def run_harness(binary: Path, cpu: str, *levels: int) -> list[str]:
    done = subprocess.run(
        [QEMU, "-cpu", cpu, str(binary), *map(str, levels)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, (
        f"harness on {cpu} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout.splitlines()


def assert_lines(lines: list[str], expected: list[str]) -> None:
    """Each line matches its pattern (``fullmatch``), and there are no others."""
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), f"{line!r} does not match {pattern!r}"


def test_dot_product_cpu_picks_neon_dotprod_and_both_levels_are_exact(harness: Path) -> None:
    assert_lines(run_harness(harness, "max", 1, 4),
                 [r"best level=4", r"ok level=1 checks=\d+", r"ok level=4 checks=\d+"])


def test_cpu_without_dot_products_uses_the_portable_kernel_and_refuses_level_4(
        harness: Path) -> None:
    # The refusal happens before any kernel runs: an sdot here would be SIGILL (exit -4).
    assert_lines(run_harness(harness, "cortex-a53", 1, 4),
                 [r"best level=1", r"ok level=1 checks=\d+", r"refused level=4 rc=-2"])

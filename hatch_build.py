"""Build hook: compile the matcher's int8 search library (edge/matching/_int8scan.c).

Why a hook and a plain shared library: the C file has no Python API in it (the package loads it
with ctypes), so all it needs is a C compiler, which JetPack and Debian/Ubuntu build machines
have; no Python headers, no per-interpreter builds. Without a compiler the package still
installs and the matcher uses its numpy paths (it logs so), unless EDGE_FACE_REQUIRE_NATIVE=1,
which `make setup` sets so a broken build fails loudly here and in CI.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("edge/matching/_int8scan.c")
LIBRARY = Path("edge/matching/_int8scan.so")
FLAGS = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-Wall", "-Wextra"]


def compiler() -> list[str] | None:
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def build(root: Path) -> str | None:
    """Compile into the source tree (atomically); None on success, else why not."""
    cc = compiler()
    if cc is None:
        return "no C compiler found (set CC, or install gcc)"
    source, target = root / SOURCE, root / LIBRARY
    fd, tmp = tempfile.mkstemp(prefix=".int8scan-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        run = subprocess.run([*cc, *FLAGS, "-o", tmp, str(source), "-lm"],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            return f"{' '.join(cc)} failed:\n{run.stderr.strip()}"
        os.chmod(tmp, 0o755)  # mkstemp made it private; a shared library is not secret
        os.replace(tmp, target)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        problem = build(Path(self.root))
        if problem is not None:
            if os.environ.get("EDGE_FACE_REQUIRE_NATIVE") == "1":
                raise RuntimeError(f"edge-face: building {LIBRARY.name} failed: {problem}")
            print(f"edge-face: WARNING: {LIBRARY.name} not built ({problem}); the matcher "
                  "will use its slower numpy paths", file=sys.stderr)
            return
        if version != "editable":  # an editable install loads it from the source tree
            build_data["artifacts"].append(str(LIBRARY))
            build_data["pure_python"] = False
            # Platform-specific, but no Python ABI inside (ctypes loads it): any Python 3.
            platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
            build_data["tag"] = f"py3-none-{platform}"

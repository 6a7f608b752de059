"""The systemd unit, checked by systemd itself (`systemd-analyze`), not by reading it.

The sysusers.d and tmpfiles.d snippets are applied by `systemd-sysusers`/`systemd-tmpfiles` to
a throw-away root directory, so what they create (names, ids, owners, modes) is systemd's own
reading of them. Which keys systemd 249 knows cannot be asked of the systemd installed here
(252 on Debian 12), so that part is a table of the version each key appeared in, from
systemd's NEWS and man pages; a key missing from the table fails the test until someone looks
it up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[1] / "systemd"
UNIT = SYSTEMD_DIR / "edge-face.service"
SYSUSERS = SYSTEMD_DIR / "sysusers.d" / "edge-face.conf"
TMPFILES = SYSTEMD_DIR / "tmpfiles.d" / "edge-face.conf"
DROP_IN = SYSTEMD_DIR / "edge-face.service.d" / "site.conf.example"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")

#: JetPack 6 runs Ubuntu 22.04, whose systemd is 249.
TARGET_SYSTEMD = 249
MAX_EXPOSURE = 3.0

#: The systemd version each key used by the unit first appeared in (NEWS / systemd.directives).
KEY_SINCE: dict[str, int] = {
    "Description": 1, "Documentation": 189, "Wants": 1, "After": 1, "WantedBy": 1,
    "StartLimitIntervalSec": 230, "StartLimitBurst": 1,
    "Type": 1, "NotifyAccess": 1, "ExecStart": 1, "ExecReload": 1, "WatchdogSec": 1,
    "Restart": 1, "RestartSec": 1, "RestartPreventExitStatus": 1, "TimeoutStartSec": 188,
    "TimeoutStopSec": 188, "User": 1, "Group": 1, "SupplementaryGroups": 1,
    "StateDirectory": 235, "StateDirectoryMode": 235, "CacheDirectory": 235,
    "CacheDirectoryMode": 235, "ConfigurationDirectory": 235,
    "ConfigurationDirectoryMode": 235, "RuntimeDirectory": 211, "RuntimeDirectoryMode": 211,
    "UMask": 1, "NoNewPrivileges": 187,
    "ProtectSystem": 214, "ProtectHome": 214, "ProtectKernelTunables": 232,
    "ProtectKernelModules": 232, "ProtectKernelLogs": 244, "ProtectControlGroups": 232,
    "ProtectClock": 245, "ProtectHostname": 242, "ProtectProc": 247, "PrivateMounts": 239,
    "RestrictNamespaces": 233, "RestrictRealtime": 231, "RestrictSUIDSGID": 242,
    "LockPersonality": 235, "RemoveIPC": 232, "KeyringMode": 235,
    "CapabilityBoundingSet": 1, "AmbientCapabilities": 229, "RestrictAddressFamilies": 211,
    "SystemCallArchitectures": 213, "SystemCallFilter": 187, "SystemCallErrorNumber": 187,
    "DevicePolicy": 1, "DeviceAllow": 1, "Environment": 1, "IPAddressDeny": 235,
    "IPAddressAllow": 235,
}
#: Syscall groups and the version they appeared in (systemd.exec(5), "System Call Filtering").
SYSCALL_GROUP_SINCE: dict[str, int] = {
    "@system-service": 239, "@privileged": 231, "@mount": 231, "@swap": 231, "@reboot": 231,
    "@debug": 231, "@obsolete": 231, "@cpu-emulation": 231, "@raw-io": 231, "@module": 231,
    "@clock": 231, "@resources": 231,
}


def _keys(path: Path) -> list[tuple[str, str]]:
    """Every ``Key=value`` of a unit file (commented-out lines excluded)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip()))
    return out


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointed at this checkout's entry point, which exists."""
    exe = Path(sys.executable).with_name("edge-face")
    text = UNIT.read_text().replace("/opt/edge-face/venv/bin/edge-face", str(exe))
    path = tmp_path / "edge-face.service"
    path.write_text(text)
    return path


def test_unit_verifies_clean(unit: Path) -> None:
    proc = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "edge-face.service" not in proc.stderr, proc.stderr


def test_unit_with_the_example_drop_in_verifies(unit: Path) -> None:
    """The example drop-in, every line uncommented, is valid too (what a site would write)."""
    drop = unit.parent / "edge-face.service.d"
    drop.mkdir()
    lines = [re.sub(r"^#(?=[A-Z])", "", line) for line in DROP_IN.read_text().splitlines()]
    (drop / "site.conf").write_text("\n".join(lines) + "\n")
    # Drop-ins are read from the unit search path, which this variable sets (":" = and defaults).
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit.parent}:")
    proc = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "site.conf" not in proc.stderr, proc.stderr


def test_unit_is_hardened(unit: Path) -> None:
    proc = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edge-face\.service: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, proc.stdout
    # The figure the unit's header states is the one systemd 252 (Debian 12, CI) computes;
    # other versions weigh the items a little differently.
    version = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True,
                             timeout=60).stdout.split()[1]
    if version == "252":
        assert f"--offline=yes` on this file: {exposure}" in UNIT.read_text()


def test_unit_keys_exist_on_systemd_249() -> None:
    for path in (UNIT, DROP_IN):
        text = "\n".join(re.sub(r"^#(?=[A-Z])", "", line)
                         for line in path.read_text().splitlines())
        tmp_keys = [line.partition("=")[0].strip() for line in text.splitlines()
                    if re.match(r"^[A-Z][A-Za-z]+=", line)]
        for key in tmp_keys:
            assert key in KEY_SINCE, f"{path.name}: {key}= is not in KEY_SINCE; look it up"
            assert KEY_SINCE[key] <= TARGET_SYSTEMD, f"{key}= needs systemd {KEY_SINCE[key]}"
    for key, value in _keys(UNIT):
        if key == "SystemCallFilter":
            for group in re.findall(r"@[a-z-]+", value):
                assert group in SYSCALL_GROUP_SINCE, f"{group}: look up its version"
                assert SYSCALL_GROUP_SINCE[group] <= TARGET_SYSTEMD, group


def test_unit_contract() -> None:
    keys = _keys(UNIT)
    have = {k: v for k, v in keys}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30s",
        "Restart": "on-failure", "RestartPreventExitStatus": "78",
        "ExecReload": "/bin/kill -HUP $MAINPID", "User": "edge-face", "Group": "edge-face",
        "StateDirectory": "edge-face", "CacheDirectory": "edge-face",
        "ConfigurationDirectory": "edge-face", "RuntimeDirectory": "edge-face",
        "Environment": "TMPDIR=%t/edge-face", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "LockPersonality": "yes",
        "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "", "SupplementaryGroups": "video render", "UMask": "0077",
    }
    for key, value in expected.items():
        assert have.get(key) == value, (key, have.get(key))
    # The two deliberate omissions (see the unit's comments): the Jetson GPU, Argus CSI.
    assert "PrivateDevices" not in have and "PrivateTmp" not in have
    assert "PrivateDevices=yes: it gives" in UNIT.read_text()
    assert "PrivateTmp=yes: Argus" in UNIT.read_text()


def _sysroot(tmp_path: Path) -> Path:
    """A root directory with only root and video, like a fresh minimal Debian."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nvideo:x:44:\n")
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).write_text("")
    return root


def _table(path: Path) -> dict[str, list[str]]:
    return {f[0]: f for f in (line.split(":") for line in path.read_text().splitlines())}


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_and_tmpfiles_make_the_user_and_its_directories(tmp_path: Path) -> None:
    root = _sysroot(tmp_path)
    subprocess.run(["systemd-sysusers", f"--root={root}", "-"], input=SYSUSERS.read_text(),
                   text=True, check=True, capture_output=True, timeout=60)
    users, groups = _table(root / "etc" / "passwd"), _table(root / "etc" / "group")
    user = users["edge-face"]
    assert user[5:] == ["/var/lib/edge-face", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000, "a system user"
    assert groups["video"][2] == "44", "an existing group keeps its id"
    assert "edge-face" in groups["video"][3].split(",")
    assert "edge-face" in groups["render"][3].split(",")

    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", "-"],
                   input=TMPFILES.read_text(), text=True, check=True, capture_output=True,
                   timeout=60)
    uid, gid = int(user[2]), int(groups["edge-face"][2])
    want = {"etc/edge-face": (0o750, 0, gid), "var/lib/edge-face/data": (0o700, uid, gid),
            "var/lib/edge-face/keys": (0o700, uid, gid),
            "var/cache/edge-face/models": (0o750, uid, gid)}
    for rel, (mode, owner, group) in want.items():
        st = (root / rel).stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, owner, group), rel

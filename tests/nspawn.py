"""A device stand-in for the end-to-end test: Debian bookworm under a real systemd, in nspawn.

Why nspawn and not a mock: the claims under test (Type=notify readiness, the watchdog, restart
on kill -9, the hardening keys actually applying, the Ansible role changing nothing on a second
run) belong to systemd and to a real playbook over a real SSH connection.

The root file system is built once by ``debootstrap --variant=minbase`` and cached under
``~/.cache/edge-face/e2e/rootfs-<hash>``, where the hash covers the suite, the mirror and the
package list, so changing any of them builds a new one and a clean clone always gets a correct
one. Each run boots a fresh copy (the cache stays pristine) and deletes it afterwards, also when
a step failed. The container shares the host's network (no ``--private-network``): its sshd
listens on a free loopback port, and the daemon inside reaches the host's mosquitto on
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from mqtt_broker import free_port

SUITE = "bookworm"
MIRROR = os.environ.get("EDGE_FACE_E2E_MIRROR", "http://deb.debian.org/debian")
#: What a freshly flashed device has before Ansible runs: systemd, sshd, Python for Ansible's
#: modules (python3-apt for its apt module), and python3-venv for the role's venv.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt",
            "python3-venv", "ca-certificates", "iproute2", "procps")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-face" / "e2e"
BOOT_TIMEOUT_S = 120.0


class ContainerError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why this machine cannot run the container, or None when it can."""
    if os.geteuid() != 0:
        return "the e2e boots a systemd-nspawn container and needs root"
    for tool in ("systemd-nspawn", "debootstrap", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make e2e-deps installs it)"
    with open("/proc/self/status", encoding="ascii") as f:
        cap_eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    if not cap_eff & (1 << 21):  # CAP_SYS_ADMIN: mounts and namespaces for the container
        return "no CAP_SYS_ADMIN (an unprivileged container cannot start systemd-nspawn)"
    return None


def rootfs_key() -> str:
    text = "\n".join([SUITE, "minbase", MIRROR, *sorted(PACKAGES)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_rootfs() -> tuple[Path, float]:
    """The pristine root file system, built when missing; returns it and the build seconds."""
    target = CACHE / f"rootfs-{rootfs_key()}"
    if (target / "usr" / "bin" / "python3").exists() and (target / ".complete").exists():
        return target, 0.0
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f".build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.monotonic()
    proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                           SUITE, str(work), MIRROR], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ContainerError(f"debootstrap failed ({proc.returncode}): {proc.stdout[-3000:]}"
                             f"{proc.stderr[-2000:]}")
    (work / ".complete").write_text(rootfs_key() + "\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return target, time.monotonic() - t0


class Container:
    """One booted copy of the cached root file system, reachable over SSH as root."""

    def __init__(self, rootfs: Path, workdir: Path, name: str = "edge-face-e2e") -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.name = name
        self.ssh_port = free_port()
        self.key = workdir / "id_ed25519"
        self.console_log = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.timings: dict[str, float] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(rootfs), str(self.root)], check=True,
                       timeout=600)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True, timeout=60)
        ssh_dir = self.root / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        (self.root / "etc" / "ssh" / "sshd_config.d" / "e2e.conf").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n")
        (self.root / "etc" / "hostname").write_text(name + "\n")

    def boot(self) -> None:
        with open(self.console_log, "wb") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--boot", f"--directory={self.root}",
                 f"--machine={self.name}", "--register=no", "--keep-unit", "--console=pipe"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self.proc.returncode}:\n"
                                     + self.console_log.read_text(errors="replace")[-3000:])
            if self.ssh("true", check=False, timeout=10).returncode == 0:
                return
            time.sleep(1.0)
        raise ContainerError("the container's sshd did not answer within "
                             f"{BOOT_TIMEOUT_S:.0f} s:\n"
                             + self.console_log.read_text(errors="replace")[-3000:])

    @property
    def ssh_args(self) -> list[str]:
        return ["-i", str(self.key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ssh", *self.ssh_args, "root@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ContainerError(f"`{command}` in the container exited {proc.returncode}: "
                                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return proc

    def unit(self, name: str, *props: str) -> dict[str, str]:
        out = self.ssh(f"systemctl show {name} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        """Power the container off (SIGTERM to nspawn halts it), kill it if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

"""Test hosts on one machine: each a network namespace with its own address, hostname and
mounts, on a bridge with the test's own machine.

Loopback tests share everything a second machine would not: one address, one home, one
cache. A host here has its own IP (its processes cannot even reach 127.0.0.1 of the
test), its own hostname, and a mount namespace in which paths can be hidden (a tmpfs
over them), so "it worked because it saw the orchestrator's files" cannot pass.
Everything made here is removed on exit, also when the test fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# 10.213.X.0/24 with X from the pid and the call: tests in parallel sessions do not collide.
_NET = "10.213.{}.{}"
_CALLS = itertools.count()


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    home: Path
    hide: tuple[Path, ...] = ()
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(
        self, argv: Sequence[str], env: Mapping[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host, in its own session (so a test can kill its group)."""
        # The hidden paths and the command travel as arguments, never inside the script.
        wrapper = [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", "-c",
            'hostname "$1" || exit 96; shift; '
            'while [ "$1" != -- ]; do mount -t tmpfs tmpfs "$1" || exit 97; shift; done; '
            'shift; exec "$@"',
            "sh", self.name, *map(str, self.hide), "--", *argv,
        ]  # fmt: skip
        with log.open("ab") as out:
            proc = subprocess.Popen(
                wrapper, stdout=out, stderr=out, env=dict(env), start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def unplug(self) -> None:
        """Take the host off the network, as a pulled cable would: its processes live on."""
        _ip("-n", self.namespace, "link", "set", "eth0", "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _usable() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces)"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "test hosts need iproute2 and util-linux (make test installs them)"
    return None


@contextlib.contextmanager
def hosts(
    tmp: Path, names: Sequence[str], hide: Sequence[Path] = ()
) -> Iterator[tuple[str, list[Host]]]:
    """Hosts named ``names`` on a bridge; yields (this machine's address on it, hosts).

    ``hide`` are paths of this machine that every host sees empty (a tmpfs over each).
    """
    why = _usable()
    if why:
        pytest.skip(why)
    # Unique per call: a namespace deleted by an earlier test can outlive its deletion
    # (the kernel frees it once nothing runs in it), and its veth with it.
    call = next(_CALLS)
    tag = f"{os.getpid() % 1000}{call % 100}"
    subnet = (os.getpid() + 37 * call) % 250 + 1
    bridge = f"rbr{tag}"
    made: list[Host] = []
    namespaces: list[str] = []
    try:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)  # a stale one
        try:
            _ip("link", "add", bridge, "type", "bridge")
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot make a bridge here: {e.stderr.decode().strip()}")
        _ip("addr", "add", f"{_NET.format(subnet, 1)}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for k, name in enumerate(names, start=2):
            ns = f"repro-{tag}-{name}"
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # a stale one
            _ip("netns", "add", ns)
            namespaces.append(ns)
            veth = f"rv{tag}{name}"[:15]
            # One left by a run that was killed before its cleanup would block the name.
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{_NET.format(subnet, k)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            home = tmp / f"host-{name}" / "home"
            home.mkdir(parents=True)
            made.append(Host(name, ns, _NET.format(subnet, k), home, tuple(hide)))
        yield _NET.format(subnet, 1), made
    finally:
        for host in made:
            for proc in host.procs:
                stop(proc)
        for ns in namespaces:
            # Whatever still runs there (a reproducer in a session of its own) goes too.
            left = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in left.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group, then SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

"""`pvc top` in a real terminal (tmux, 80 columns) against a local cluster: nodes and VMs shown, a VM's
state change, a daemon stopping and a migration in progress appear (by watch), keys switch the view and
sort, `q` quits with status 0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import running_cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 2)


class Tmux:
    """One tmux server of our own (its socket in the test's temporary folder), one 80x30 pane running a command."""

    def __init__(self, command: str, env: dict[str, str], socket: Path) -> None:
        self.socket = str(socket)
        self.tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "30",
                  *(a for k, v in env.items() for a in ("-e", f"{k}={v}")), command)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def wait_for(self, pattern: str, timeout: float = 15) -> str:
        """The screen once ``pattern`` (a regular expression, multiline) shows on it."""
        try:
            return wait_until(lambda: re.search(pattern, s := self.screen(), re.MULTILINE) and s, timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(f"{pattern!r} not on the screen within {timeout} s; it shows:\n{self.screen()}") from None

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)
        Path(self.socket).unlink(missing_ok=True)


def test_top_shows_the_cluster_live_and_quits_on_q(cluster, tmp_path) -> None:
    pvc = shutil.which("pvc") or "pvc"
    no_tty = subprocess.run([pvc, "top"], env=cluster.env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=30, check=False)
    assert no_tty.returncode != 0 and no_tty.stderr.startswith("error: pvc top needs a terminal")

    cluster.define("topvm", node="hv2")
    term = Tmux(f"{pvc} top; echo pvc-top-exit=$?; sleep 600", {"PVC_ZOOKEEPER": cluster.zookeeper},
                tmp_path / "tmux.sock")
    try:
        term.wait_for(r"^1 VM: 1 stop ")  # the watches deliver one by one: wait for the whole picture
        screen = term.wait_for(r"^hv2 +run +ready +\w+ +0/1 ")  # topvm assigned, not running
        assert re.search(r"^NODE +DAEMON +DOMAIN +COORD +VMS +LOAD", screen, re.MULTILINE)
        assert re.search(r"^hv1 +run +ready +(primary|secondary) ", screen, re.MULTILINE)
        assert "No flush in progress." in screen
        assert all(len(line) <= 80 for line in screen.splitlines())

        term.keys("v")  # the VMs view
        term.wait_for(r"^topvm +\w{8} +stop +shutoff +hv2 +64 +1$")
        cluster.pvc("vm", "start", "topvm")  # no --wait: the screen must follow by itself
        term.wait_for(r"^topvm +\w{8} +start +running +hv2 ")
        assert "1 VM: 1 start" in term.screen()

        term.keys("s")  # sort VMs by state
        term.wait_for(r"vms by state\s*$")
        term.keys("Tab")  # back to the nodes, running VM counted on its node
        term.wait_for(r"^hv2 +run +ready +\w+ +1/1 ")

        # A migration in progress: its source's daemon, which carries it out, is stopped (the VM runs on).
        cluster.dev.stop_node("hv2")
        term.wait_for(r"^hv2 +stop +ready ")
        cluster.pvc("vm", "migrate", "topvm", "--target", "hv1")
        screen = term.wait_for(r"^  topvm: hv2 -> hv1$")
        assert "MIGRATIONS IN PROGRESS" in screen and "1 VM: 1 migrate" in screen
        cluster.dev.start_node("hv2")
        term.wait_for(r"^No migration in progress\.$", timeout=30)
        term.wait_for(r"^hv1 +run +ready +\w+ +1/1 ")  # it moved: running on hv1
        term.keys("q")
        term.wait_for(r"^pvc-top-exit=0$")
    finally:
        term.close()
        cluster.pvc("vm", "stop", "topvm", "--wait", check=False)
        cluster.pvc("vm", "undefine", "topvm", "--yes", check=False)

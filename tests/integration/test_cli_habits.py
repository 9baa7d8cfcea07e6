"""An operator's CLI habits against a real one-node cluster: shell completion (scripts for bash, zsh
and fish; names answered from ZooKeeper), --version, the ZooKeeper address from config files,
confirmation before destruction (on a terminal, with --yes, without a terminal) and the VM name rule."""

from __future__ import annotations

import importlib.metadata
import os
import pty
import select
import shutil
import subprocess
import time

import pytest

from tests.conftest import domain_xml, running_cluster

PVC = shutil.which("pvc") or "pvc"


@pytest.fixture(scope="module")
def habits(tmp_path_factory):
    for cluster in running_cluster(tmp_path_factory, 1):
        for name in ("web1", "web2", "db1"):
            cluster.define(name, node="hv1")
        cluster.pvc("network", "add", "42", "--description", "habits")
        yield cluster


def run(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                          check=False, **kw)


def vm_names(cluster) -> set[str]:
    return {v["name"] for v in cluster.pvc_json("vm", "list")}


# -- completion and --version -------------------------------------------------------------------


def test_completion_scripts_and_queries(habits, tmp_path):
    env = {**habits.env, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1", "HOME": str(tmp_path)}
    scripts = {sh: run([PVC, "--show-completion", sh], env).stdout for sh in ("bash", "zsh", "fish")}
    assert "complete -o default -F _pvc_completion pvc" in scripts["bash"]
    assert "compdef _pvc_completion pvc" in scripts["zsh"]
    assert "complete --command pvc" in scripts["fish"]

    # bash, for real: the installed script, sourced, answers with the cluster's VM names.
    installed = run([PVC, "--install-completion", "bash"], env)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "pvc.sh"
    assert "_pvc_completion" in script.read_text() and str(script) in (tmp_path / ".bashrc").read_text()
    bash = (f"source {script}; COMP_WORDS=(pvc vm start we); COMP_CWORD=3; _pvc_completion pvc; "
            "printf '%s\\n' \"${COMPREPLY[@]}\"")
    answer = run(["bash", "-c", bash], {**habits.env, "PATH": os.environ["PATH"]})
    assert answer.stdout.split() == ["web1", "web2"], answer

    # zsh and fish ask the same way their scripts do: names of nodes and networks too.
    zsh = run([PVC], {**habits.env, "_PVC_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "pvc node info "})
    assert "hv1" in zsh.stdout
    fish = run([PVC], {**habits.env, "_PVC_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                       "_TYPER_COMPLETE_ARGS": "pvc network remove "})
    assert fish.stdout.split() == ["42"]
    vms = run([PVC], {**habits.env, "_PVC_COMPLETE": "complete_bash", "COMP_WORDS": "pvc vm undefine ",
                      "COMP_CWORD": "3"})
    assert vms.stdout.split() == ["db1", "web1", "web2"]
    # -z on the command line being completed is the cluster asked.
    bare = {k: v for k, v in habits.env.items() if k != "PVC_ZOOKEEPER"}
    given = run([PVC], {**bare, "XDG_CONFIG_HOME": str(tmp_path), "_PVC_COMPLETE": "complete_bash",
                        "COMP_WORDS": f"pvc -z {habits.zookeeper} vm info d", "COMP_CWORD": "5"})
    assert given.stdout.split() == ["db1"]

    # No cluster to ask: no names, no error, no hang.
    for zookeeper in ("127.0.0.1:1", "not a host"):
        nothing = run([PVC], {**habits.env, "PVC_ZOOKEEPER": zookeeper, "_PVC_COMPLETE": "complete_bash",
                              "COMP_WORDS": "pvc vm info ", "COMP_CWORD": "3"})
        assert (nothing.returncode, nothing.stdout.strip(), nothing.stderr) == (0, "", "")


def test_version():
    shown = run([PVC, "--version"], dict(os.environ))
    assert shown.returncode == 0 and shown.stdout == f"pvc {importlib.metadata.version('pvc')}\n"


# -- the ZooKeeper address from config files ----------------------------------------------------


def test_zookeeper_from_config_files(habits, tmp_path):
    base = {k: v for k, v in habits.env.items() if k not in ("PVC_ZOOKEEPER", "PVCD_CONFIG_FILE")}
    user_dir = tmp_path / "xdg" / "pvc"
    user_dir.mkdir(parents=True)
    nowhere = {**base, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PVCD_CONFIG_FILE": str(tmp_path / "absent.yaml")}

    # The user's pvc.yaml.
    (user_dir / "pvc.yaml").write_text(f"zookeeper: \"{habits.zookeeper}\"\n")
    listed = run([PVC, "vm", "list", "-o", "json"], nowhere)
    assert listed.returncode == 0 and "web1" in listed.stdout, listed.stderr
    # PVC_ZOOKEEPER beats it.
    (user_dir / "pvc.yaml").write_text("zookeeper: 127.0.0.1:1\n")
    assert run([PVC, "vm", "list"], {**nowhere, "PVC_ZOOKEEPER": habits.zookeeper}).returncode == 0
    # A broken pvc.yaml: one line naming the file and the key.
    (user_dir / "pvc.yaml").write_text("zookeper: 127.0.0.1:2181\n")
    broken = run([PVC, "vm", "list"], nowhere)
    assert broken.returncode != 0 and broken.stderr.count("\n") == 1
    assert str(user_dir / "pvc.yaml") in broken.stderr and "zookeper" in broken.stderr
    (user_dir / "pvc.yaml").unlink()

    # On a node: its pvcd config (hosts and the credential this protected cluster needs), and its
    # node name is what `pvc node ...` means by default (the devcluster's hv1 is not this host's name).
    node_env = {**nowhere, "PVCD_CONFIG_FILE": habits.dev.node("hv1").config}
    listed = run([PVC, "vm", "list", "-o", "json"], node_env)
    assert listed.returncode == 0 and "web1" in listed.stdout, listed.stderr
    plan = run([PVC, "node", "flush", "--dry-run", "-o", "json"], node_env)
    assert plan.returncode == 0 and '"hv1"' in plan.stdout, plan.stderr


# -- confirmation before destruction ------------------------------------------------------------


def on_terminal(cluster, args: list[str], answer: str) -> tuple[int, str]:
    """Run pvc with a pseudo-terminal as its stdin/stdout; type ``answer`` at the [y/N] prompt."""
    main, side = pty.openpty()
    proc = subprocess.Popen([PVC, *args], stdin=side, stdout=side, stderr=side, env=cluster.env)
    os.close(side)
    out, answered, deadline = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([main], [], [], 1)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the other side closed: pvc exited
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"[y/N]" in out:
                os.write(main, answer.encode() + b"\n")
                answered = True
        return proc.wait(timeout=30), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


def test_confirmation(habits):
    cluster = habits
    # Without a terminal and without --yes: one line, non-zero, nothing changed.
    for args, what in ((["vm", "undefine", "web2"], "Undefine VM web2"), (["network", "remove", "42"], "Remove network 42"),
                       (["token", "remove", "habit-token"], "Remove token habit-token")):
        refused = cluster.pvc(*args, check=False)  # stdin: not a terminal (captured)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused
        assert what in refused.stderr and "--yes" in refused.stderr
    assert "web2" in vm_names(cluster)
    assert [n["vni"] for n in cluster.pvc_json("network", "list")] == [42]

    # On a terminal: asked; "n" (or nothing) keeps it, "y" goes ahead.
    code, out = on_terminal(cluster, ["vm", "undefine", "web2"], "n")
    assert code == 1 and "Undefine VM web2? [y/N]" in out and "nothing changed" in out, out
    assert "web2" in vm_names(cluster)
    code, out = on_terminal(cluster, ["vm", "undefine", "web2"], "y")
    assert code == 0 and "Undefined VM web2" in out, out
    assert "web2" not in vm_names(cluster)

    # --yes / -y: no question.
    assert "Removed network 42" in cluster.pvc("network", "remove", "42", "-y").stdout
    assert cluster.pvc_json("network", "list") == []


# -- VM names -----------------------------------------------------------------------------------


def test_vm_name_rule(habits):
    before = vm_names(habits)
    for name in ("my vm", " web3", "a/b", "..", "x" * 65):  # (every case: tests/unit/test_names.py)
        path = habits.tmp / "badname.xml"
        path.write_text(domain_xml(name))
        refused = habits.pvc("vm", "define", str(path), "--target", "hv1", check=False)
        assert refused.returncode != 0 and refused.stderr.count("\n") == 1, refused
        # The error says which name, and the rule: characters, length, spaces.
        assert repr(name) in refused.stderr
        assert "letters" in refused.stderr and "1 to 64 characters" in refused.stderr and "trailing" in refused.stderr
    assert vm_names(habits) == before

    # A rename through modify follows the same rule.
    uuid = habits.vm("db1")["uuid"]
    path = habits.tmp / "db1-renamed.xml"
    path.write_text(domain_xml("db/1", uuid=uuid))
    refused = habits.pvc("vm", "modify", "db1", str(path), check=False)
    assert refused.returncode != 0 and "'db/1'" in refused.stderr and "letters" in refused.stderr
    assert habits.vm("db1")["uuid"] == uuid

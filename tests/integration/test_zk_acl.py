"""ZooKeeper ACLs against a real server: the cluster's znodes refuse anonymous clients, the
credential is sent again after the server restarts and after the session expires, every create
carries the ACL, the CLI takes the credential in its connection string, rotation works."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import aiozk
import pytest

from pvc import store
from pvc.config import parse_config
from pvc.devcluster.zookeeper_server import ZookeeperServer
from pvc.errors import InvalidInput, Unauthorized
from pvc.zk import ZK, digest_id, parse_connection

CRED = "admin:s3cr@t:pw"  # a password may hold ':' and '@'
NEW = "admin2:n3w-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ZookeeperServer(tmp_path_factory.mktemp("zk-acl"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pvc(server, *args, credential: str | None = CRED):
    conn = f"{credential}@{server.address}" if credential else server.address
    return subprocess.run([shutil.which("pvc") or "pvc", *args], env={**os.environ, "PVC_ZOOKEEPER": conn},
                          capture_output=True, text=True, timeout=60, check=False)


def with_zk(connection: str, fn, **kw):
    async def main():
        zk = ZK(connection, **kw)
        await zk.start()
        try:
            return await fn(zk)
        finally:
            await zk.close()

    return asyncio.run(main())


async def anonymous(address: str, fn):
    client = aiozk.ZKClient(address, session_timeout=5, read_timeout=5)
    await client.start()
    try:
        return await asyncio.wait_for(fn(client), 10)
    finally:
        await client.close()


def test_connection_string_parsing_never_repeats_the_password():
    assert parse_connection("u:p@ss:w@h1:1,[::1]:2") == ("u:p@ss:w", [("h1", 1), ("::1", 2)])
    assert parse_connection("h1") == ("", [("h1", 2181)])
    for bad in ("nopassword@h1:1", ":secretpw@h1:1", "u:@h1:1", "u:secretpw@"):
        with pytest.raises(InvalidInput) as info:
            parse_connection(bad)
        assert "secretpw" not in str(info.value)
    assert parse_config("zookeeper: {hosts: 'zk1:2181', auth: 'pvc:pw'}").zookeeper.auth == "pvc:pw"
    with pytest.raises(InvalidInput, match=r"zookeeper.auth: invalid ZooKeeper credential") as info:
        parse_config("zookeeper: {auth: 'secretpw'}")
    assert "secretpw" not in str(info.value)


def test_init_protects_and_anonymous_clients_are_refused(server):
    init = pvc(server, "init")
    assert init.returncode == 0, init.stderr
    assert "readable and writable only by admin" in init.stdout
    assert pvc(server, "init").returncode == 0  # safe to repeat

    async def refused(client):
        outcomes = []
        for attempt in (lambda: client.get_data("/schema/version"), lambda: client.get_children("/domains"),
                        lambda: client.set_data("/config/maintenance", b"true"),
                        lambda: client.create("/nodes/intruder"), lambda: client.delete("/config/maintenance"),
                        lambda: client.get_data("/config/acl")):
            try:
                await attempt()
                outcomes.append("allowed")
            except aiozk.exc.NoAuth:
                outcomes.append("NoAuth")
        return outcomes

    assert asyncio.run(anonymous(server.address, refused)) == ["NoAuth"] * 6

    # The CLI: with the credential it works; without it, or with a wrong password, one clear line.
    ok = pvc(server, "cluster", "status", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    for credential, expected in ((None, "the cluster needs its credential"), ("admin:wrong-pw", "to user admin")):
        proc = pvc(server, "cluster", "status", credential=credential)
        assert proc.returncode == 4 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and "refused access (NoAuth)" in proc.stderr and expected in proc.stderr
        assert "wrong-pw" not in proc.stderr
    bad = pvc(server, "cluster", "status", credential="admin")  # no password: refused before connecting
    assert bad.returncode != 0 and bad.stderr.startswith("error: invalid ZooKeeper credential")


def test_every_create_carries_the_acl_and_credential_survives_restart_and_expiry(server):
    assert pvc(server, "init").returncode == 0  # (safe to repeat; this test may run alone)
    connection = f"{CRED}@{server.address}"
    acl = [("digest", digest_id(CRED), 31)]

    def acl_of(entries):
        return [(a.id.scheme, a.id.id, a.perms) for a in entries]

    async def work(zk):
        await zk.ensure_path("/events/acltest/deep")
        await zk.create("/events/acltest/plain", b"x")
        seq = await zk.create("/events/acltest/seq-", b"x", sequential=True)
        await zk.multi([("create", "/events/acltest/txn", b"x")])
        created = {p: acl_of(await zk.get_acl(p)) for p in
                   ("/events/acltest", "/events/acltest/deep", "/events/acltest/plain", seq, "/events/acltest/txn")}

        # The server dies and comes back: the same session continues on a new connection, which
        # must authenticate again before the next write.
        session = zk.session_id
        server.kill()
        server.start()
        await zk.set("/events/acltest/plain", b"after restart")
        same_session = zk.session_id == session

        # The session expires (the client frozen, no heartbeat, for longer than its timeout): a new
        # session on a new connection, authenticated again.
        time.sleep(4 * zk._client.session.timeout)  # noqa: ASYNC251  (the point: the whole client frozen)
        await zk.set("/events/acltest/plain", b"after expiry")
        renewed = zk.session_id != session
        data = await zk.get_data("/events/acltest/plain")
        await zk.delete_tree("/events/acltest")
        return created, same_session, renewed, data

    created, same_session, renewed, data = with_zk(connection, work, session_timeout=1.5, request_timeout=30)
    assert all(value == acl for value in created.values()), created
    assert same_session and renewed and data == b"after expiry"

    async def refused(zk):
        with pytest.raises(Unauthorized, match="the cluster needs its credential"):
            await store.check_schema(zk)

    with_zk(server.address, refused)


def test_rotation_adds_then_removes_a_credential(server):
    assert pvc(server, "init").returncode == 0

    async def rotate(zk_old):
        # A long-running client of the old credential (a pvcd) follows the list: once the new
        # credential is added, what it creates carries both.
        add = await asyncio.to_thread(pvc, server, "cluster", "acl", "--add-credential", NEW, "-o", "json")
        assert add.returncode == 0, add.stderr
        for _ in range(100):
            if len(zk_old.acl) == 2:
                break
            await asyncio.sleep(0.05)
        await zk_old.create("/events/rotation", b"x")
        both = sorted(a.id.id for a in await zk_old.get_acl("/events/rotation"))
        return add.stdout, both

    added, both = with_zk(f"{CRED}@{server.address}", rotate)
    assert '"admin"' in added and '"admin2"' in added
    assert both == sorted([digest_id(CRED), digest_id(NEW)])
    assert pvc(server, "vm", "list", credential=NEW).returncode == 0

    itself = pvc(server, "cluster", "acl", "--remove-credential", NEW, credential=NEW)
    assert itself.returncode != 0 and "cannot remove the credential this command connects with" in itself.stderr
    removed = pvc(server, "cluster", "acl", "--remove-credential", CRED, credential=NEW)
    assert removed.returncode == 0, removed.stderr
    assert "users: admin2" in removed.stdout
    old = pvc(server, "vm", "list")
    assert old.returncode == 4 and "refused access (NoAuth) to user admin" in old.stderr

    async def after(zk):
        acl = sorted(a.id.id for a in await zk.get_acl("/events/rotation"))
        await zk.delete("/events/rotation")
        return acl

    assert with_zk(f"{NEW}@{server.address}", after) == [digest_id(NEW)]
    # Back to the first credential for any later test of this module.
    assert pvc(server, "cluster", "acl", "--add-credential", CRED, credential=NEW).returncode == 0
    assert pvc(server, "cluster", "acl", "--remove-credential", NEW).returncode == 0

"""Parsing the ZooKeeper connection string (pure): every server, or one clear error."""

from __future__ import annotations

import pytest

from pvc.errors import InvalidInput
from pvc.zk import parse_hosts


@pytest.mark.parametrize("hosts, servers", [
    ("127.0.0.1:2181", [("127.0.0.1", 2181)]),
    ("127.0.0.1:1,127.0.0.1:2, 127.0.0.1:3", [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]),
    ("zk1", [("zk1", 2181)]),
    ("[::1]:2182,zk-2.example:2181", [("::1", 2182), ("zk-2.example", 2181)]),
])
def test_parsed(hosts, servers):
    assert parse_hosts(hosts) == servers


@pytest.mark.parametrize("hosts, message", [
    ("", "no ZooKeeper address given"),
    ("  ", "no ZooKeeper address given"),
    ("foo:bar", "port 'bar' is not a number"),
    (":::", "invalid ZooKeeper address ':::'"),
    ("a:1,", "invalid ZooKeeper address ''"),
    ("a:0", "port '0'"),
    ("a:65536", "port '65536'"),
    ("a:2181/chroot", "invalid ZooKeeper address 'a:2181/chroot'"),
    ("::1:2181", "an IPv6 address in brackets"),
])
def test_refused(hosts, message):
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_hosts(hosts)

"""`-o table|wide|json|yaml|name` (pvc.cli.common): each list command's columns, declared once, render
within 80 columns with worst-case realistic values (16-character names, 5-digit MiB, the longest states);
wide adds the full UUID; yaml is the json document; names one a line; piped output has no escape codes."""

from __future__ import annotations

import json
import sys

import msgspec
import pytest
import yaml

from pvc.cli import common, connection, flushing, network, node, storage, token, vm  # noqa: F401
from pvc.cli.common import Output, plural, print_fields, show_list, show_record
from pvc.ops.flush import PlannedMove
from pvc.ops.token import TokenInfo
from pvc.schema import Domain, Lease, Network, Reservation
from pvc.storage.model import PoolView, SnapshotView, VolumeView
from pvc.store import NodeView

NAME = "web-frontend-016"  # 16 characters
UUID = "3f2a9c4e-1b7d-4e8a-9c0f-5d6e7f8a9b0c"
DOMAINS = [Domain(uuid=UUID, name=NAME, state=state, libvirt_state="shutoff", node="hypervisor-0016",
                  previous_node="hypervisor-0015", memory_mib=16384, vcpus=16, tags=["prod", "web"],
                  failed_reason="a long reason " * 5) for state in ("migrate", "shutdown", "restart")]
NODES = [NodeView(name="hypervisor-0016", daemon_mode="coordinator", daemon_state="fenced",
                  coordinator_state="relinquish", domain_state="unflush", domains_count=128, running_domains=[],
                  memory_total_mib=524288, memory_used_mib=1, memory_free_mib=98304, memory_allocated_mib=262144,
                  vcpus_total=128, vcpus_allocated=256, load=12.35, keepalive_time=0.0, libvirt_uri="qemu:///system",
                  migration_uri="tcp://x", console_log_directory="/var/log/pvc/console", pvc_version="0.1.0")]
NETWORKS = [Network(vni=16777215, type="managed", description="customer-backend", domain="backend.example.com",
                    ipv4_network="198.51.100.0/24", ipv4_gateway="198.51.100.1", dhcp4=True,
                    dhcp4_start="198.51.100.100", dhcp4_end="198.51.100.199", ipv6_network="2001:db8:150::/64",
                    ipv6_gateway="2001:db8:150::1")]
DHCP = [(Reservation(mac="52:54:00:12:34:56", ip="198.51.100.250", hostname="database-replica"), "reservation", "-"),
        (Lease(mac="52:54:00:12:34:57", ip="198.51.100.101", hostname="database-replica"), "lease", "in 59m59s")]
POOLS = [PoolView(name="customer-volumes", pgs=1024, replicas=3, stored_bytes=(1 << 40) * 123, volumes=["a"] * 999)]
VOLUMES = [VolumeView(pool="customer-volumes", name="web-frontend-016", size_bytes=(1 << 40) * 2, used_by=NAME,
                      snapshots=["s"] * 100)]
SNAPSHOTS = [SnapshotView(name="before-upgrade-1", size_bytes=1 << 40, protected=True,
                          timestamp="2026-11-30T12:34:56.123456")]
TOKENS = [TokenInfo(name="monitoring-ro-01", read_only=True, created=1.8e9)]
CONNECTIONS = [{"name": "production-east1", "url": "https://pvc-api.production.example.com:7370",
                "ca": "/etc/pvc/ca/production-east1-ca.pem"}]
PLAN = [PlannedMove(vm=NAME, uuid=UUID, running=True, target="hypervisor-0016", memory_mib=16384,
                    selector="memfree", available_mib=123456),
        PlannedMove(vm=NAME, uuid=UUID, running=False, target="hypervisor-0016", memory_mib=0, selector="memfree")]

LISTS = [(DOMAINS, vm.VM_COLUMNS), (NODES, node.NODE_COLUMNS), (NETWORKS, network.NETWORK_COLUMNS),
         (DHCP, network.DHCP_COLUMNS), (POOLS, storage.POOL_COLUMNS), (VOLUMES, storage.VOLUME_COLUMNS),
         (SNAPSHOTS, storage.SNAPSHOT_COLUMNS), (PLAN, flushing._plan_columns())]


@pytest.mark.parametrize("records, columns", LISTS, ids=["vm", "node", "network", "dhcp", "pool", "volume", "snapshot", "flush-plan"])
def test_default_tables_fit_80_columns_and_wide_shows_all(records, columns, capsys):
    show_list(Output.table, records, columns)
    table = capsys.readouterr().out
    assert "\x1b" not in table
    width = max(len(line) for line in table.splitlines())
    assert width <= 80, table
    show_list(Output.wide, records, columns)
    wide = capsys.readouterr().out
    headers = wide.splitlines()[0]
    assert all(c.header in headers for c in columns)  # every declared column is in the wide set
    print(f"{columns[0].header}: {width} columns (wide: {max(len(x) for x in wide.splitlines())})\n{table}")


def test_short_uuid_in_table_full_in_wide(capsys):
    show_list(Output.table, DOMAINS, vm.VM_COLUMNS)
    table = capsys.readouterr().out
    assert UUID[:8] in table and UUID not in table
    show_list(Output.wide, DOMAINS, vm.VM_COLUMNS)
    assert UUID in capsys.readouterr().out


def test_yaml_is_the_json_document_and_names_one_a_line(capsys):
    for records in (DOMAINS, NODES, NETWORKS, TOKENS, CONNECTIONS):
        show_list(Output.json, records, [], name=lambda r: r)
        as_json = json.loads(capsys.readouterr().out)
        show_list(Output.yaml, records, [], name=lambda r: r)
        assert yaml.safe_load(capsys.readouterr().out) == as_json == msgspec.to_builtins(records)
    show_list(Output.name, DOMAINS + NODES, [])
    assert capsys.readouterr().out == f"{NAME}\n{NAME}\n{NAME}\nhypervisor-0016\n"
    show_record(Output.name, DOMAINS[0], list)
    assert capsys.readouterr().out == f"{NAME}\n"
    show_record(Output.yaml, DOMAINS[0], list)
    assert yaml.safe_load(capsys.readouterr().out)["uuid"] == UUID


def test_key_value_lines_are_aligned(capsys):
    print_fields([("name", NAME), ("node_limit", []), ("autostart", True), ("tags", ["prod", "web"]), ("x", None)])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"name:       {NAME}", "node_limit: -", "autostart:  yes", "tags:       prod, web", "x:          -"]


def test_long_values_go_on_under_their_column_on_a_terminal_only(monkeypatch, capsys):
    path = "/var/lib/pvc/console-logs/" + "a-rather-long-directory-name/" * 3 + f"{NAME}.log"
    pairs = [("name", "web1"), ("console_log_file", path), ("tags", [f"tag-{i}" for i in range(20)])]
    print_fields(pairs)  # piped (capsys): one line each, whole
    assert [line.split(maxsplit=1)[1] for line in capsys.readouterr().out.splitlines()] == \
        ["web1", path, ", ".join(f"tag-{i}" for i in range(20))]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "80")
    print_fields(pairs)
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    values: list[list[str]] = []
    for line in lines:  # a key starts a value; 18 spaces (the value column) continue it
        if line.startswith(" " * 18):
            values[-1].append(line[18:])
        else:
            values.append([line.split(maxsplit=1)[1]])
    assert values[0] == ["web1"] and len(values[1]) > 1 and len(values[2]) > 1
    assert "".join(values[1]) == path and " ".join(values[2]) == ", ".join(f"tag-{i}" for i in range(20))


def test_plain_grammar():
    assert [plural(0, "VM"), plural(1, "VM"), plural(2, "VM"), plural(2, "copy", "copies")] == \
        ["0 VMs", "1 VM", "2 VMs", "2 copies"]


def test_colour_only_when_asked_and_never_with_no_color(monkeypatch, capsys):
    """Piped: plain text without trailing padding; FORCE_COLOR (rich's switch) colours states;
    NO_COLOR wins over it (bold headers may stay: NO_COLOR is about colour)."""
    from pvc.cli.common import print_table, state_style

    for var in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    print_table(["NODE", "STATE"], [["hv1", "run"], ["hypervisor-2", "dead"]], {1: state_style})
    assert capsys.readouterr().out == "NODE          STATE\nhv1           run\nhypervisor-2  dead\n"
    monkeypatch.setenv("FORCE_COLOR", "1")
    print_table(["STATE"], [["run"]], {0: state_style})
    assert "\x1b[32m" in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    print_table(["STATE"], [["run"]], {0: state_style})
    assert "\x1b[3" not in capsys.readouterr().out


def test_states_read_as_sentences():
    from pvc.cli.common import state_words
    from pvc.schema import VM_STATES

    assert [f"VM q3 is {state_words(s)}" for s in ("stop", "disable", "fail")] == \
        ["VM q3 is stopped", "VM q3 is disabled", "VM q3 is failed"]
    assert all(state_words(s) != s for s in VM_STATES)  # every state has its word

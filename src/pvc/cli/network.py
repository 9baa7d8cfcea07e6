"""`pvc network ...`: client networks, their DHCP leases and reservations."""

from __future__ import annotations

import time
from enum import Enum
from typing import Optional

import typer

from pvc.cli.common import OUTPUT_OPTION, YES_OPTION, Column, Output, confirm, run_ops, show_list, show_record
from pvc.cli.completion import complete_network

app = typer.Typer(help="Manage client networks (managed: VXLAN with gateway, DHCP and DNS; bridged: VLAN).",
                  no_args_is_help=True)
dhcp_app = typer.Typer(help="DHCP leases and reservations of a managed network.", no_args_is_help=True)
app.add_typer(dhcp_app, name="dhcp")


class NetworkType(str, Enum):
    managed = "managed"
    bridged = "bridged"


VNI = typer.Argument(..., help="Network id: the VXLAN VNI (managed) or VLAN id (bridged)", min=1,
                     autocompletion=complete_network)


@app.command()
def add(
    vni: int = VNI,
    type: NetworkType = typer.Option(NetworkType.managed, "--type", "-t", help="managed | bridged"),
    description: str = typer.Option(..., "--description", "-d", help="What the network is for."),
    domain: str = typer.Option("", "--domain", help="DNS domain the network's DNS serves (managed)."),
    ipv4: str = typer.Option("", "--ipv4", help="IPv4 network in CIDR form, e.g. 192.0.2.0/24."),
    gateway: str = typer.Option("", "--gateway", help="IPv4 gateway address (on the primary)."),
    dhcp: bool = typer.Option(False, "--dhcp/--no-dhcp", help="Serve DHCP on the IPv4 network."),
    dhcp_start: str = typer.Option("", "--dhcp-start", help="First address of the DHCP range."),
    dhcp_end: str = typer.Option("", "--dhcp-end", help="Last address of the DHCP range."),
    ipv6: str = typer.Option("", "--ipv6", help="IPv6 network in CIDR form, e.g. 2001:db8::/64."),
    gateway6: str = typer.Option("", "--gateway6", help="IPv6 gateway address (on the primary)."),
):
    """Add a client network."""
    from pvc.schema import Network

    net = Network(vni=vni, type=type.value, description=description, domain=domain, ipv4_network=ipv4,
                  ipv4_gateway=gateway, dhcp4=dhcp, dhcp4_start=dhcp_start, dhcp4_end=dhcp_end,
                  ipv6_network=ipv6, ipv6_gateway=gateway6)
    net = run_ops(lambda b: b.call("network.add", net))
    typer.echo(f"Added {net.type} network {net.vni} ({net.description})")


@app.command()
def modify(
    vni: int = VNI,
    description: Optional[str] = typer.Option(None, "--description", "-d"),
    domain: Optional[str] = typer.Option(None, "--domain", help='"" removes it.'),
    ipv4: Optional[str] = typer.Option(None, "--ipv4", help='"" removes IPv4 (gateway and DHCP too).'),
    gateway: Optional[str] = typer.Option(None, "--gateway"),
    dhcp: Optional[bool] = typer.Option(None, "--dhcp/--no-dhcp"),
    dhcp_start: Optional[str] = typer.Option(None, "--dhcp-start"),
    dhcp_end: Optional[str] = typer.Option(None, "--dhcp-end"),
    ipv6: Optional[str] = typer.Option(None, "--ipv6", help='"" removes IPv6.'),
    gateway6: Optional[str] = typer.Option(None, "--gateway6"),
):
    """Change a network (options not given stay as they are)."""
    from pvc.ops.network import NetworkChanges

    changes = NetworkChanges(vni=vni, description=description, domain=domain, ipv4_network=ipv4, ipv4_gateway=gateway,
                             dhcp4=dhcp, dhcp4_start=dhcp_start, dhcp4_end=dhcp_end, ipv6_network=ipv6,
                             ipv6_gateway=gateway6)
    net = run_ops(lambda b: b.call("network.modify", changes))
    typer.echo(f"Modified network {net.vni}")


@app.command()
def remove(vni: int = VNI, yes: bool = YES_OPTION):
    """Remove a network (every node removes its interfaces; the primary stops its DHCP and DNS); asks first unless --yes."""
    from pvc.ops.network import NetworkRef

    confirm(f"Remove network {vni}", yes)

    net = run_ops(lambda b: b.call("network.remove", NetworkRef(vni=vni)))
    typer.echo(f"Removed network {net.vni} ({net.description})")


def _v4(n) -> str:
    return f"{n.ipv4_network} via {n.ipv4_gateway}" if n.ipv4_network else "-"


def _v6(n) -> str:
    return f"{n.ipv6_network} via {n.ipv6_gateway}" if n.ipv6_network else "-"


def _dhcp(n) -> str:
    return f"{n.dhcp4_start}-{n.dhcp4_end}" if n.dhcp4 else "-"


# The default set fits 80 columns (subnets only); -o wide adds the domain, gateways and DHCP ranges.
NETWORK_COLUMNS = [
    Column("VNI", lambda n: n.vni),
    Column("TYPE", lambda n: n.type),
    Column("DESCRIPTION", lambda n: n.description),
    Column("DOMAIN", lambda n: n.domain or "-", shown="wide"),
    Column("IPV4", lambda n: n.ipv4_network or "-", shown="table"),
    Column("IPV4", _v4, shown="wide"),
    Column("DHCP", lambda n: "yes" if n.dhcp4 else "no", shown="table"),
    Column("DHCP", _dhcp, shown="wide"),
    Column("IPV6", lambda n: n.ipv6_network or "-", shown="table"),
    Column("IPV6", _v6, shown="wide"),
]


@app.command("list")
def list_(output: Output = OUTPUT_OPTION):
    """List client networks."""
    from pvc.ops.common import NoParams

    nets = run_ops(lambda b: b.call("network.list", NoParams()))
    show_list(output, nets, NETWORK_COLUMNS, name=lambda n: n.vni)


@app.command()
def info(vni: int = VNI, output: Output = OUTPUT_OPTION):
    """Show one network with its reservations and leases."""
    from pvc.ops.network import NetworkRef

    view = run_ops(lambda b: b.call("network.info", NetworkRef(vni=vni)))
    n = view.network
    show_record(output, view, lambda: [
        ("vni", n.vni), ("type", n.type), ("description", n.description), ("domain", n.domain), ("ipv4", _v4(n)),
        ("dhcp", _dhcp(n)), ("ipv6", _v6(n)), ("reservations", len(view.reservations)), ("leases", len(view.leases))],
        name=n.vni)


def _expires(expiry: int) -> str:
    if not expiry:
        return "never"
    left = int(expiry - time.time())
    return "expired" if left <= 0 else f"in {left // 60}m{left % 60:02d}s"


@dhcp_app.command("list")
def dhcp_list(vni: int = VNI, output: Output = OUTPUT_OPTION):
    """List a network's DHCP leases and reservations."""
    from pvc.ops.network import NetworkRef

    view = run_ops(lambda b: b.call("network.dhcp_list", NetworkRef(vni=vni)))
    if output in (Output.json, Output.yaml):
        return show_record(output, view, list)
    rows = [(r, "reservation", "-") for r in view.reservations]
    rows += [(lease, "lease", _expires(lease.expiry)) for lease in view.leases]
    show_list(output, rows, DHCP_COLUMNS, name=lambda row: row[0].mac)


DHCP_COLUMNS = [  # rows: (reservation or lease, kind, expiry)
    Column("MAC", lambda row: row[0].mac),
    Column("IP", lambda row: row[0].ip),
    Column("HOSTNAME", lambda row: row[0].hostname or "-"),
    Column("KIND", lambda row: row[1]),
    Column("EXPIRES", lambda row: row[2]),
]


@dhcp_app.command("add")
def dhcp_add(vni: int = VNI, mac: str = typer.Argument(..., help="Client MAC address"),
             ip: str = typer.Argument(..., help="Address reserved for it"),
             hostname: str = typer.Option("", "--hostname", help="Host name it gets (and DNS serves).")):
    """Reserve an address for a MAC address."""
    from pvc.ops.network import ReservationParams

    res = run_ops(lambda b: b.call("network.dhcp_add", ReservationParams(vni=vni, mac=mac, ip=ip, hostname=hostname)))
    typer.echo(f"Reserved {res.ip} for {res.mac} on network {vni}")


@dhcp_app.command("remove")
def dhcp_remove(vni: int = VNI, mac: str = typer.Argument(..., help="Client MAC address"),
                ip: str = typer.Argument("", help="The reserved address (checked when given)")):
    """Remove a reservation."""
    from pvc.ops.network import ReservationRef

    res = run_ops(lambda b: b.call("network.dhcp_remove", ReservationRef(vni=vni, mac=mac, ip=ip)))
    typer.echo(f"Removed the reservation of {res.ip} for {res.mac} on network {vni}")

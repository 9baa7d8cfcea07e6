"""dnsmasq configuration for a managed client network, the pure part: the config file, the DHCP
hosts file (reservations) and the lease-database lines the lease hook prints at ``init``.

One dnsmasq per network, bound to the network's bridge only (``bind-dynamic``, as libvirt does),
so several run side by side on the primary. Leases live in ZooKeeper, not in a file
(``leasefile-ro``): dnsmasq calls the lease hook on every change and once at start (``init``) to
read them back, which is how a new primary serves the leases of the old one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pvc.networks import bridge_name
from pvc.schema import Lease, Network, Reservation


@dataclass(frozen=True)
class DnsmasqFiles:
    conf: str
    hosts: str
    pid: str
    hook: str


def files_for(run_directory: str, vni: int) -> DnsmasqFiles:
    base = f"{run_directory.rstrip('/')}/dnsmasq-{vni}"
    return DnsmasqFiles(conf=f"{base}.conf", hosts=f"{base}.hosts", pid=f"{base}.pid", hook=f"{base}-lease-hook")


def render_conf(net: Network, files: DnsmasqFiles, *, lease_time: int = 3600, dns_servers: list[str] = (),
                user: str = "nobody") -> str:
    bridge = bridge_name(net.vni)
    lines = [
        f"# pvc network {net.vni}: {net.description}",
        "# Written by pvcd on the primary coordinator; changes are overwritten.",
        f"interface={bridge}",
        "bind-dynamic",
        "except-interface=lo",
        "no-hosts",
        "no-resolv",
        *(f"server={s}" for s in dns_servers),
        f"pid-file={files.pid}",
        f"user={user}",
        "log-facility=-",
        "dhcp-authoritative",
        "leasefile-ro",
        f"dhcp-script={files.hook}",
        f"dhcp-hostsfile={files.hosts}",
    ]
    if net.domain:
        lines += [f"domain={net.domain}", f"local=/{net.domain}/", "expand-hosts"]
    if net.ipv4_network and net.ipv4_gateway:
        v4 = ipaddress.ip_network(net.ipv4_network)
        if net.dhcp4 and net.dhcp4_start and net.dhcp4_end:
            lines.append(f"dhcp-range={net.dhcp4_start},{net.dhcp4_end},{v4.netmask},{lease_time}")
        else:
            # No dynamic range: reservations are still served.
            lines.append(f"dhcp-range={v4.network_address},static,{v4.netmask},{lease_time}")
        lines += [f"dhcp-option=option:router,{net.ipv4_gateway}",
                  f"dhcp-option=option:dns-server,{net.ipv4_gateway}"]
        if net.domain:
            lines.append(f"dhcp-option=option:domain-search,{net.domain}")
    if net.ipv6_network and net.ipv6_gateway:
        v6 = ipaddress.ip_network(net.ipv6_network)
        lines += ["enable-ra", f"dhcp-range={v6.network_address},ra-stateless,{v6.prefixlen},{lease_time}",
                  f"dhcp-option=option6:dns-server,[{net.ipv6_gateway}]"]
        if net.domain:
            lines.append(f"dhcp-option=option6:domain-search,{net.domain}")
    return "\n".join(lines) + "\n"


def render_hosts(reservations: list[Reservation]) -> str:
    """``dhcp-hostsfile`` lines: MAC,IP[,hostname] (dnsmasq re-reads it on SIGHUP)."""
    out = []
    for r in sorted(reservations, key=lambda r: r.mac):
        out.append(",".join([r.mac, r.ip, *([r.hostname] if r.hostname else [])]))
    return "".join(line + "\n" for line in out)


def render_leases(leases: list[Lease]) -> str:
    """The lease database as dnsmasq's ``init`` call expects it on standard output."""
    return "".join(f"{l.expiry} {l.mac} {l.ip} {l.hostname or '*'} {l.client_id or '*'}\n"
                   for l in sorted(leases, key=lambda l: l.ip))


def render_hook(python: str, zookeeper: str, vni: int, netns_of: str = "") -> str:
    """The executable dnsmasq runs as its lease script (dnsmasq takes a path, not arguments).

    ``netns_of``: a ``/proc/<pid>/ns/net`` path to return to first. dnsmasq runs inside the node's
    network namespace when ``networking.netns`` is set, where ZooKeeper may not be reachable; the
    hook then joins the daemon's namespace again (dnsmasq runs its scripts as root).

    ``zookeeper`` may carry the cluster's credential: it goes in the environment, not on a command
    line every user's ``ps`` shows (the script itself is written readable by root only)."""
    import shlex

    prefix = f"nsenter --net={shlex.quote(netns_of)} -- " if netns_of else ""
    return ("#!/bin/sh\n# dnsmasq's lease script for pvc network %d: records leases in ZooKeeper.\n"
            "export PVC_ZOOKEEPER=%s\n"
            "exec %s%s -m pvc.daemon.lease_hook --vni %d \"$@\"\n"
            % (vni, shlex.quote(zookeeper), prefix, shlex.quote(python), vni))


def lease_from_script(action: str, mac: str, ip: str, hostname: str, env: dict[str, str]) -> Lease | None:
    """The lease a dnsmasq script call (``add``/``old`` MAC IP [HOSTNAME]) describes; None for others."""
    if action not in ("add", "old") or not mac or not ip or ":" in ip:
        return None
    expires = env.get("DNSMASQ_LEASE_EXPIRES", "")
    length = env.get("DNSMASQ_LEASE_LENGTH", "")
    expiry = int(expires) if expires.isdigit() else 0
    if not expiry and length.isdigit() and env.get("DNSMASQ_TIME_REMAINING", "").isdigit():
        import time

        expiry = int(time.time()) + int(env["DNSMASQ_TIME_REMAINING"])
    return Lease(mac=mac.lower(), ip=ip, hostname=(hostname or env.get("DNSMASQ_SUPPLIED_HOSTNAME", "")).lower(),
                 expiry=expiry, client_id=env.get("DNSMASQ_CLIENT_ID", ""))

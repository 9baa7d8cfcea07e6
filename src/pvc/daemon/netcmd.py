"""Thin adapter over iproute2: links, bridges, VXLAN/VLAN interfaces and addresses, optionally inside
a network namespace (``networking.netns``), run as bounded asyncio subprocesses.

Every command that creates something tolerates "exists", every command that removes something
tolerates "not there": the callers converge on a desired state and may repeat themselves.
"""

from __future__ import annotations

import asyncio
import json
import shutil

from pvc.errors import PvcError
from pvc.networks import InterfacePlan

COMMAND_TIMEOUT = 15.0


class NetCommandError(PvcError):
    pass


class NetCommands:
    def __init__(self, netns: str = "", log=None) -> None:
        self.netns = netns
        self.log = log
        # One change at a time: the networking role and the primary's duties touch the same links.
        self.lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    # -- running -----------------------------------------------------------------------------------

    def ip_argv(self, *args: str) -> list[str]:
        return ["ip", *(["-n", self.netns] if self.netns else []), *args]

    def exec_argv(self, argv: list[str]) -> list[str]:
        """argv run inside the namespace (for programs without a namespace option, like dnsmasq)."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    async def run(self, argv: list[str], *, ok_errors: tuple[str, ...] = (), timeout: float = COMMAND_TIMEOUT) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise NetCommandError(f"{' '.join(argv)}: no result within {timeout:g} s") from None
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip()
            if any(e in message for e in ok_errors):
                return ""
            raise NetCommandError(f"{' '.join(argv)}: {message or f'exit status {proc.returncode}'}")
        return out.decode(errors="replace")

    async def ip(self, *args: str, ok_errors: tuple[str, ...] = ()) -> str:
        return await self.run(self.ip_argv(*args), ok_errors=ok_errors)

    # -- reading -----------------------------------------------------------------------------------

    async def links(self) -> dict[str, dict]:
        out = await self.ip("-j", "-d", "link", "show")
        return {link["ifname"]: link for link in json.loads(out or "[]")}

    async def addresses(self, device: str) -> list[str]:
        """The addresses (with prefix length) on ``device``; [] if it does not exist."""
        out = await self.ip("-j", "addr", "show", "dev", device, ok_errors=("does not exist",))
        result = []
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                if a.get("scope") != "link":
                    result.append(f"{a['local']}/{a['prefixlen']}")
        return result

    async def first_ipv4(self, device: str) -> str:
        for addr in await self.addresses(device):
            if ":" not in addr:
                return addr.split("/")[0]
        return ""

    # -- changing ----------------------------------------------------------------------------------

    async def ensure_interfaces(self, plan: InterfacePlan) -> None:
        commands = plan.commands()
        async with self.lock:
            for args in commands[:2]:  # create the bridge and the link, both down
                await self.ip(*args, ok_errors=("File exists",))
            # Before they come up: the bridge never configures itself from the primary's router
            # advertisements (only the primary has addresses in a client network), and the link
            # under it needs no IPv6 of its own.
            await self.run(self.exec_argv([
                "sysctl", "-q", "-w", f"net/ipv6/conf/{plan.bridge}/autoconf=0",
                f"net/ipv6/conf/{plan.bridge}/accept_ra=0", f"net/ipv6/conf/{plan.link}/disable_ipv6=1",
            ]), ok_errors=("No such file",))
            for args in commands[2:]:
                await self.ip(*args, ok_errors=("File exists",))

    async def remove_interfaces(self, *devices: str) -> None:
        """Delete the devices (a network's link first, then its bridge); missing ones are fine."""
        async with self.lock:
            for dev in devices:
                await self.ip("link", "del", dev, ok_errors=("Cannot find device", "does not exist"))

    async def add_address(self, device: str, cidr: str) -> None:
        args = ["addr", "add", cidr, "dev", device]
        if ":" in cidr:
            args.append("nodad")  # a gateway must answer at once after a failover
        await self.ip(*args, ok_errors=("File exists",))

    async def del_address(self, device: str, cidr: str) -> None:
        await self.ip("addr", "del", cidr, "dev", device,
                      ok_errors=("Cannot assign requested address", "Address not found", "Cannot find device",
                                 "does not exist"))

    def del_address_argv(self, device: str, cidr: str) -> list[str]:
        return self.ip_argv("addr", "del", cidr, "dev", device)

    def announce_soon(self, device: str, address: str) -> None:
        """``announce`` in the background (a takeover does not wait for its neighbours)."""
        task = asyncio.get_running_loop().create_task(self.announce(device, address))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def announce(self, device: str, address: str) -> None:
        """Tell the neighbours an address moved here (gratuitous ARP), best effort."""
        if ":" in address:
            return  # IPv6: the kernel sends unsolicited neighbour advertisements for new addresses
        busybox = shutil.which("busybox")
        arping = shutil.which("arping")
        if busybox:
            argv = [busybox, "arping", "-U", "-c", "1", "-w", "1", "-I", device, "-s", address, address]
        elif arping:
            argv = [arping, "-U", "-c", "1", "-w", "1", "-I", device, "-s", address, address]
        else:
            return
        try:
            await self.run(self.exec_argv(argv), timeout=5)
        except NetCommandError as exc:
            if self.log:
                self.log.debug("announce_failed", device=device, address=address, error=str(exc))

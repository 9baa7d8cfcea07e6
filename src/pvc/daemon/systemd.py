"""sd_notify without a dependency: READY/STOPPING and the watchdog, when run under systemd."""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            pass


async def watchdog_loop() -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if not usec:
        await asyncio.Event().wait()
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(usec / 2e6)

"""Hold one connection to a libvirtd's ``test:///default`` driver for as long as that daemon lives.

The test driver keeps its state (domains, networks...) in one object shared by the daemon's
``test:///default`` connections and frees it when the last one closes: the next client then sees
a fresh driver again, with the built-in domain "test" back and every domain it created gone.
This process keeps the count above zero, and removes the built-in domain once, at start.

Usage: python -m pvc.devcluster.keeper URI READY_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

import libvirt


def main(uri: str, ready_file: str) -> int:
    libvirt.registerErrorHandler(lambda *_: None, None)
    # An event loop makes libvirt notice a closed socket and answer the daemon's keepalives.
    libvirt.virEventRegisterDefaultImpl()
    conn = libvirt.open(uri)
    alive = [True]
    conn.registerCloseCallback(lambda *_: alive.__setitem__(0, False), None)
    try:
        dom = conn.lookupByName("test")
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass  # already gone
    Path(ready_file).write_text("ready\n")
    while alive[0]:
        libvirt.virEventRunDefaultImpl()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

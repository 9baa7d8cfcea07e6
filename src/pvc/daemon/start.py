"""`pvcd`, the node daemon's executable (the daemon itself: pvc.daemon.main).

structlog formats tracebacks with rich whenever rich is installed, and it is (`pvc top` needs it). A
daemon writes JSON lines and never renders for a terminal, while rich costs each pvcd ~4 MiB and ~80
modules: it is hidden here, before anything imports structlog (which then falls back to plain
tracebacks)."""

from __future__ import annotations

import sys


def main() -> None:
    sys.modules.setdefault("rich", None)  # None: `import rich` raises ImportError
    from pvc.daemon.main import main as serve

    serve()


if __name__ == "__main__":
    main()

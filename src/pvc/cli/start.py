"""The `pvc` executable. A command line's run is mostly start-up (imports, on a small machine ~100 ms of
~150), so two of its costs are skipped: garbage collection while modules load (they allocate much and
free little; ``pvc.cli.common.work_begins`` turns it back on), and tearing the interpreter down at the
end (the process is gone a moment later anyway; the output is flushed first)."""

from __future__ import annotations

import gc
import os
import sys


def main() -> None:
    gc.disable()
    from pvc.cli.app import app

    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # as the interpreter does with sys.exit("message")
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `pvc vm list | head -1`: the reader has gone, as with an unflushed print
        code = code or 141
    os._exit(code or 0)


if __name__ == "__main__":
    main()

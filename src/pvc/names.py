"""What a VM name may be: decided once, here, for every way a name enters the cluster.

A VM's name becomes a ZooKeeper node (/domain_names/<name>), libvirt's domain name, a command-line
argument and its console log file (<console_log.directory>/<name>.log). The rule keeps all four
safe: ASCII letters, digits, '.', '-' and '_', beginning with a letter or digit (so never '.', '..',
a hidden file or something that reads as an option), at most 64 characters.
"""

from __future__ import annotations

import re

from pvc.errors import InvalidInput

MAX_LENGTH = 64
RULE = (f"a name has 1 to {MAX_LENGTH} characters: letters a-z A-Z, digits, '.', '-' and '_', begins with a "
        "letter or digit, no spaces (none leading or trailing)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def name_problem(name: str) -> str:
    """Why ``name`` is not a usable name ("" when it is)."""
    if not name:
        return "it is empty"
    if len(name) > MAX_LENGTH:
        return f"it has {len(name)} characters"
    if name != name.strip():
        return "it has leading or trailing spaces"
    if _NAME.fullmatch(name):
        return ""
    bad = next((c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))), "")
    if bad:
        return f"it contains {bad!r}"
    return f"it begins with {name[0]!r}"


def check_vm_name(name: str) -> str:
    """``name`` if it is a usable VM name, else InvalidInput stating the rule (one line)."""
    problem = name_problem(name)
    if problem:
        raise InvalidInput(f"VM name {name!r} refused ({problem}): {RULE}")
    return name

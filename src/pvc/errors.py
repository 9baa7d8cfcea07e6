"""Errors that reach a user as one clear line.

Anything raised as a PvcError is printed by the CLI as ``error: <message>`` with a non-zero exit;
the daemon logs it with its bound context.
"""


class PvcError(Exception):
    """A failure with a message fit for an operator."""

    exit_code = 1


class NotFound(PvcError):
    """An unknown VM, node, network or key."""


class InvalidInput(PvcError):
    """Malformed input: bad XML, bad option values, an invalid transition."""


class Conflict(PvcError):
    """The request clashes with the cluster's current state (duplicate name, busy lock...)."""


class Unavailable(PvcError):
    """A component (ZooKeeper, libvirt) cannot be reached in time."""

    exit_code = 3

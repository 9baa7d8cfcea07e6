"""Errors that reach a user as one clear line.

Anything raised as a PvcError is printed by the CLI as ``error: <message>`` with a non-zero exit;
the daemon logs it with its bound context.
"""


class PvcError(Exception):
    """A failure with a message fit for an operator. ``http_status``: what the REST API answers."""

    exit_code = 1
    http_status = 500


class NotFound(PvcError):
    """An unknown VM, node, network or key."""

    http_status = 404


class InvalidInput(PvcError):
    """Malformed input: bad XML, bad option values, an invalid transition."""

    http_status = 400


class Conflict(PvcError):
    """The request clashes with the cluster's current state (duplicate name, busy lock...)."""

    http_status = 409


class Unavailable(PvcError):
    """A component (ZooKeeper, libvirt) cannot be reached in time."""

    exit_code = 3
    http_status = 503


class Unauthorized(PvcError):
    """No credential, or a wrong one (API: missing or unknown token)."""

    exit_code = 4
    http_status = 401


class Forbidden(PvcError):
    """A valid credential that may not do this (a read-only token asking for a change)."""

    exit_code = 4
    http_status = 403


class UsageError(InvalidInput):
    """A command used in a way that needs the operator's explicit say (CLI exit code 2, like a usage error)."""

    exit_code = 2


class TimedOut(PvcError):
    """A wait (``--wait``, ``?wait=true`` with a timeout) ran out; the request stays recorded."""

    http_status = 504

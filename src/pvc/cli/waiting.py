"""Moved to pvc.ops.waiting (the operations layer); kept so that older imports still work."""

from pvc.ops.waiting import ABSENCE_GRACE, wait_for_vm  # noqa: F401

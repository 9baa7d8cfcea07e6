"""The operations layer: every operation on the cluster, once, for the CLI and the REST API alike.

An operation (``pvc.ops.registry.operation``) is one async function ``f(ctx, params) -> result`` in a
module ``pvc.ops.<group>`` (its name is ``<group>.<verb>``: ``vm.start`` lives in ``pvc.ops.vm``). It
checks its arguments (typed ``params``, a msgspec Struct), checks prerequisites against cluster state,
writes the intent and returns a typed result, or raises a ``pvc.errors.PvcError`` subclass whose
``http_status``/``exit_code`` say what kind of failure it is. The CLI only parses arguments and prints
(``pvc.cli.common.run_ops``); the API only decodes requests and encodes responses (``pvc.api``); both
call ``registry.call``/``registry.stream``, which also audit every change in the event log.
"""

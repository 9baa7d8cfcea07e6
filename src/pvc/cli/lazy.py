"""A typer group whose sub-groups are imported and built only when a command line reaches them.

typer turns every command of every group into a click command at each start, and importing the
groups pulls in what each of them needs: `pvc vm info X` paid for all ~80 commands. Here the root
only names its groups; `pvc vm ...` imports and builds the vm group alone. `pvc --help`, shell
completion and "did you mean" suggestions still see every group (they load them all).
"""

from __future__ import annotations

import importlib

import click
from typer.core import TyperGroup


class LazyGroup(TyperGroup):
    """``groups``: name -> the modules that make the group, the first one's ``app`` (a typer.Typer)
    being the group and the others adding commands to it; listed after the group's own commands,
    in this order (typer's order: commands, then groups)."""

    groups: dict[str, tuple[str, ...]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*(n for n in self.commands if n not in self.groups), *self.groups]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.groups and cmd_name not in self.commands:
            self.commands[cmd_name] = self._build(cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and args[0] not in self.groups:
            for name in self.groups:  # an unknown name: typer suggests the closest of all commands
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def _build(self, name: str) -> click.Command:
        from typer.main import get_group_from_info
        from typer.models import TyperInfo

        first, *extensions = self.groups[name]
        app = importlib.import_module(first).app
        for module in extensions:
            importlib.import_module(module)
        # Exactly what typer does for `add_typer(app, name=name)` when it builds the whole tree.
        return get_group_from_info(TyperInfo(app, name=name), pretty_exceptions_short=True,
                                   suggest_commands=self.suggest_commands, rich_markup_mode=self.rich_markup_mode)

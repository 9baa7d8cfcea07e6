"""typer groups whose commands are imported and converted only when a command line reaches them.

typer turns every command of every group into a click command at each start, and importing the
groups pulls in what each of them needs: `pvc vm info X` paid for all ~80 commands. Here the root
only names its groups (their modules are imported on use), and a group converts a command (or a
sub-group) the first time it is asked for it: `pvc vm info X` converts one command. `pvc --help`,
shell completion and "did you mean" suggestions still see everything (they ask for all of it), and
each command is built by typer's own functions, so it is the same as typer would have built.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from functools import partial
from typing import ClassVar

import click
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_command_name, get_group_from_info
from typer.models import DefaultPlaceholder, TyperInfo

PRETTY_EXCEPTIONS_SHORT = True  # typer.Typer's default, which pvc's app keeps


class LazyGroup(TyperGroup):
    """``groups`` (on a subclass, for the root): name -> the modules that make the group, the first
    one's ``app`` (a typer.Typer) being the group and the others adding commands to it; listed after
    the group's own commands, in this order (typer's order: commands, then groups)."""

    groups: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        self.pending: dict[str, Callable[[], click.Command]] = {name: partial(self._import, name) for name in self.groups}
        self.order = [*(n for n in self.commands if n not in self.pending), *self.pending]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.order)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        build = self.pending.pop(cmd_name, None)
        if build is not None:
            self.commands[cmd_name] = build()
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and args[0] not in self.pending:
            for name in list(self.pending):  # an unknown name: typer suggests the closest of all commands
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def _import(self, name: str) -> click.Command:
        first, *extensions = self.groups[name]
        app = importlib.import_module(first).app
        for module in extensions:
            importlib.import_module(module)
        return lazy_group(TyperInfo(app, name=name), self)  # as typer builds `add_typer(app, name=name)`


def lazy_group(info: TyperInfo, parent: TyperGroup) -> click.Command:
    """What typer's ``get_group_from_info(info)`` builds, with its commands converted on first use."""
    app = info.typer_instance
    settings = {"pretty_exceptions_short": PRETTY_EXCEPTIONS_SHORT, "rich_markup_mode": parent.rich_markup_mode}
    unusual = (not isinstance(info.cls, DefaultPlaceholder) or not isinstance(app.info.cls, DefaultPlaceholder)
               or any(isinstance(g.name, DefaultPlaceholder) or not g.name for g in app.registered_groups))
    if unusual:  # an own group class, or a group merged in without a name: typer's way, all at once
        return get_group_from_info(info, suggest_commands=parent.suggest_commands, **settings)
    bare = copy.copy(app)
    bare.registered_commands, bare.registered_groups = [], []
    bare_info = copy.copy(info)
    bare_info.typer_instance, bare_info.cls = bare, LazyGroup
    group = get_group_from_info(bare_info, suggest_commands=parent.suggest_commands, **settings)
    for command in app.registered_commands:
        name = command.name or get_command_name(command.callback.__name__)
        group.pending[name] = partial(get_command_from_info, command, **settings)
    for sub in app.registered_groups:
        group.pending[sub.name] = partial(lazy_group, sub, group)
    group.order = list(group.pending)
    return group

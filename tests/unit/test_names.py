"""The VM name rule (pvc.names): what is accepted, and that a refusal says why and states the rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.errors import InvalidInput
from pvc.names import MAX_LENGTH, check_vm_name, name_problem


@pytest.mark.parametrize("name", ["web", "web-1", "db_2.example", "A", "9lives", "x" * MAX_LENGTH, "a..b"])
def test_accepted(name):
    assert check_vm_name(name) == name


@pytest.mark.parametrize(("name", "why"), [
    ("", "empty"),
    ("x" * (MAX_LENGTH + 1), f"{MAX_LENGTH + 1} characters"),
    (" web", "leading or trailing spaces"),
    ("web ", "leading or trailing spaces"),
    ("a/b", "'/'"), ("/abs", "'/'"), ("..", "begins with '.'"), (".", "begins with '.'"),
    (".hidden", "begins with '.'"), ("-rf", "begins with '-'"), ("_x", "begins with '_'"),
    ("my vm", "' '"), ("web\x00", "'\\x00'"), ("web\nserver", "'\\n'"), ("web\x7fserver", "'\\x7f'"),
    ("wéb", "'é'"), ("a&b", "'&'"), ("a$(x)", "'$'"),
])
def test_refused_with_reason_and_rule(name, why):
    with pytest.raises(InvalidInput) as exc:
        check_vm_name(name)
    msg = str(exc.value)
    assert "\n" not in msg.replace(repr(name), "")  # one line (the name is shown escaped)
    assert why in msg
    # The rule itself is stated: characters, length, spaces.
    assert f"1 to {MAX_LENGTH} characters" in msg and "letters" in msg and "leading or trailing" in msg


@given(st.text(max_size=80))
def test_an_accepted_name_is_a_safe_file_name(name):
    # Whatever passes makes <dir>/<name>.log a file directly in <dir>, and a valid ZooKeeper node name.
    if not name_problem(name):
        assert "/" not in name and name not in (".", "..") and not name.startswith((".", "-"))
        assert all(c.isascii() and c.isprintable() and not c.isspace() for c in name)
        assert 1 <= len(name) <= MAX_LENGTH

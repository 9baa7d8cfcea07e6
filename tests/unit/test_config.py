"""pvcd configuration (pvc.config): defaults, validation naming the bad key, loading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc import config as config_mod
from pvc.config import DaemonConfig, load_config, parse_config
from pvc.errors import InvalidInput


def invalid(text, source: str = "pvcd.yaml") -> str:
    with pytest.raises(InvalidInput) as exc:
        parse_config(text, source)
    msg = str(exc.value)
    assert msg, "empty message"
    return msg


# -- defaults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", b"", "{}", b"{}"])
def test_empty_config_gives_defaults(text):
    assert parse_config(text) == DaemonConfig()


def test_default_values():
    cfg = parse_config("")
    assert cfg.node.name == "" and cfg.node.coordinators == []
    assert cfg.zookeeper.hosts == "127.0.0.1:2181"
    assert cfg.zookeeper.session_timeout == 5.0 and cfg.zookeeper.request_timeout == 5.0
    assert cfg.libvirt.uri == "qemu:///system"
    assert cfg.libvirt.migration_uri == "" and cfg.libvirt.migration_address == ""
    assert cfg.console_log.directory == "/var/log/libvirt"
    assert cfg.console_log.lines == 1000 and cfg.console_log.interval == 0.5
    assert cfg.vm.shutdown_timeout == 180.0 and cfg.vm.shutdown_timeout_policy == "stop"
    assert cfg.vm.flush_concurrency == 1 and cfg.vm.flush_unmovable_policy == "leave"
    assert cfg.logging.level == "info" and cfg.logging.format == "console"
    assert cfg.keepalive_interval == 5.0


def test_partial_section_keeps_other_defaults():
    cfg = parse_config("zookeeper:\n  hosts: zk1:2181,zk2:2181\nvm:\n  flush_concurrency: 4\n")
    assert cfg.zookeeper.hosts == "zk1:2181,zk2:2181"
    assert cfg.zookeeper.session_timeout == 5.0
    assert cfg.vm.flush_concurrency == 4
    assert cfg.vm.shutdown_timeout == 180.0
    assert cfg.libvirt == DaemonConfig().libvirt


def test_full_config():
    text = """
node:
  name: hv1
  coordinators: [hv1, hv2, hv3]
zookeeper:
  hosts: hv1:2181,hv2:2181,hv3:2181
  session_timeout: 10
  request_timeout: 2.5
libvirt:
  uri: qemu+tcp://localhost/system
  migration_uri: qemu+tcp://hv1/system
  migration_address: tcp://10.0.0.1
console_log:
  directory: /srv/logs
  lines: 50
  interval: 0.1
vm:
  shutdown_timeout: 30
  shutdown_timeout_policy: abort
  flush_concurrency: 3
  flush_unmovable_policy: shutdown
logging:
  level: debug
  format: json
keepalive_interval: 2
"""
    cfg = parse_config(text)
    assert cfg.node_name == "hv1" and cfg.is_coordinator
    assert cfg.node.coordinators == ["hv1", "hv2", "hv3"]
    assert cfg.zookeeper.session_timeout == 10.0 and isinstance(cfg.zookeeper.session_timeout, float)
    assert cfg.zookeeper.request_timeout == 2.5
    assert cfg.libvirt.migration_address == "tcp://10.0.0.1"
    assert (cfg.console_log.directory, cfg.console_log.lines, cfg.console_log.interval) == ("/srv/logs", 50, 0.1)
    assert cfg.vm.shutdown_timeout_policy == "abort" and cfg.vm.flush_unmovable_policy == "shutdown"
    assert cfg.vm.flush_concurrency == 3 and cfg.vm.shutdown_timeout == 30.0
    assert cfg.logging.level == "debug" and cfg.logging.format == "json"
    assert cfg.keepalive_interval == 2.0


def test_config_with_only_comments_gives_defaults():
    # Regression: a shipped config with every line commented out is a YAML null document and
    # is refused with "Expected `object`, got `null`"; only a completely empty file works.
    assert parse_config("# pvcd configuration\n# keepalive_interval: 5\n") == DaemonConfig()
    assert parse_config("\n   \n") == DaemonConfig()


# -- node name ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostname,short", [("hv7.example.com", "hv7"), ("hv7", "hv7"), ("a.b.c", "a")])
def test_node_name_defaults_to_short_hostname(monkeypatch, hostname, short):
    monkeypatch.setattr(config_mod.socket, "gethostname", lambda: hostname)
    assert parse_config("").node_name == short


def test_node_name_from_config_wins_over_hostname(monkeypatch):
    monkeypatch.setattr(config_mod.socket, "gethostname", lambda: "other.example.com")
    assert parse_config("node: {name: hv1}").node_name == "hv1"


def test_is_coordinator(monkeypatch):
    monkeypatch.setattr(config_mod.socket, "gethostname", lambda: "hv2.example.com")
    assert parse_config("node: {coordinators: [hv1, hv2]}").is_coordinator
    assert not parse_config("node: {coordinators: [hv1, hv3]}").is_coordinator
    assert not parse_config("").is_coordinator
    assert parse_config("node: {name: hv3, coordinators: [hv1, hv3]}").is_coordinator


# -- bad keys and types ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,key", [
    ("bogus: 1", "bogus"),
    ("node: {nmae: hv1}", "nmae"),
    ("zookeeper: {host: x}", "host"),
    ("libvirt: {url: x}", "url"),
    ("console_log: {line: 5}", "line"),
    ("vm: {shutdown_timout: 5}", "shutdown_timout"),
    ("logging: {colour: true}", "colour"),
])
def test_unknown_key_named(text, key):
    msg = invalid(text)
    assert f"`{key}`" in msg
    assert "pvcd.yaml" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text,path", [
    ("node: {name: 1}", "$.node.name"),
    ("node: {coordinators: hv1}", "$.node.coordinators"),
    ("node: {coordinators: [1]}", "$.node.coordinators[0]"),
    ("zookeeper: {hosts: 1}", "$.zookeeper.hosts"),
    ("zookeeper: {session_timeout: soon}", "$.zookeeper.session_timeout"),
    ("zookeeper: {request_timeout: [1]}", "$.zookeeper.request_timeout"),
    ("libvirt: {uri: 5}", "$.libvirt.uri"),
    ("libvirt: {migration_uri: true}", "$.libvirt.migration_uri"),
    ("libvirt: {migration_address: {}}", "$.libvirt.migration_address"),
    ("console_log: {directory: 3}", "$.console_log.directory"),
    ("console_log: {lines: many}", "$.console_log.lines"),
    ("console_log: {lines: 1.5}", "$.console_log.lines"),
    ("console_log: {lines: true}", "$.console_log.lines"),
    ("console_log: {interval: fast}", "$.console_log.interval"),
    ("vm: {shutdown_timeout: x}", "$.vm.shutdown_timeout"),
    ("vm: {shutdown_timeout_policy: kill}", "$.vm.shutdown_timeout_policy"),
    ("vm: {flush_concurrency: 2.5}", "$.vm.flush_concurrency"),
    ("vm: {flush_unmovable_policy: migrate}", "$.vm.flush_unmovable_policy"),
    ("logging: {level: INFO}", "$.logging.level"),
    ("logging: {level: trace}", "$.logging.level"),
    ("logging: {format: xml}", "$.logging.format"),
    ("keepalive_interval: often", "$.keepalive_interval"),
    ("node: hv1", "$.node"),
    ("zookeeper: 5", "$.zookeeper"),
    ("vm: []", "$.vm"),
])
def test_bad_type_names_the_key(text, path):
    msg = invalid(text)
    assert f"`{path}`" in msg
    assert msg.startswith("config pvcd.yaml: ")
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["- 1\n- 2", "42", "just a string", "true"])
def test_top_level_not_a_mapping(text):
    msg = invalid(text)
    assert "Expected `object`" in msg and "\n" not in msg


# -- ranges ---------------------------------------------------------------------------------------

POSITIVE = [
    ("zookeeper", "session_timeout"),
    ("zookeeper", "request_timeout"),
    ("console_log", "lines"),
    ("console_log", "interval"),
    ("vm", "shutdown_timeout"),
    ("vm", "flush_concurrency"),
    (None, "keepalive_interval"),
]


def _yaml(section, key, value) -> str:
    return f"{key}: {value}" if section is None else f"{section}:\n  {key}: {value}"


@pytest.mark.parametrize("section,key", POSITIVE)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_numbers_refused(section, key, value):
    msg = invalid(_yaml(section, key, value))
    dotted = key if section is None else f"{section}.{key}"
    assert f"{dotted} must be a finite number greater than 0" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("section,key", POSITIVE)
def test_smallest_positive_accepted(section, key):
    is_int = key in ("lines", "flush_concurrency")
    cfg = parse_config(_yaml(section, key, "1" if is_int else "0.001"))
    obj = cfg if section is None else getattr(cfg, section)
    assert getattr(obj, key) == (1 if is_int else 0.001)


@pytest.mark.parametrize("section,key", [p for p in POSITIVE if p[1] not in ("lines", "flush_concurrency")])
def test_nan_refused(section, key):
    # Regression: NaN passes `value <= 0`, so `keepalive_interval: .nan` is accepted.
    msg = invalid(_yaml(section, key, ".nan"))
    assert key in msg


@given(st.floats(max_value=0, allow_nan=False))
def test_property_any_non_positive_keepalive_refused(value):
    with pytest.raises(InvalidInput, match="keepalive_interval"):
        parse_config(f"keepalive_interval: {value!r}")


@given(st.integers(min_value=1, max_value=10**6))
def test_property_any_positive_int_accepted(n):
    cfg = parse_config(f"console_log: {{lines: {n}}}\nvm: {{flush_concurrency: {n}}}")
    assert cfg.console_log.lines == n and cfg.vm.flush_concurrency == n


# -- YAML syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "a: [1",                 # unclosed flow sequence
    "a: 'unterminated",      # unclosed quote
    "foo: bar: baz",         # mapping value in a plain scalar
    "\tkey: value",          # tab indentation
    "a:\n  b: 1\n c: 2",     # bad indentation
])
def test_yaml_syntax_error_is_one_line(text):
    # Regression: PyYAML's error text spans several lines ("...\n  in "<unicode string>", line 1,
    # column 4\n..."); an operator's error must be one line.
    msg = invalid(text, "/etc/pvc/pvcd.yaml")
    assert msg.startswith("config /etc/pvc/pvcd.yaml: not valid YAML")
    assert "\n" not in msg
    assert "line " in msg


def test_yaml_syntax_error_is_invalid_input_naming_source():
    msg = invalid("a: [1", "/etc/pvc/pvcd.yaml")
    assert "/etc/pvc/pvcd.yaml" in msg and "not valid YAML" in msg


# -- loading --------------------------------------------------------------------------------------


def test_load_config_from_file(tmp_path):
    path = tmp_path / "pvcd.yaml"
    path.write_text("node:\n  name: hv9\nkeepalive_interval: 1.5\n")
    cfg = load_config(str(path))
    assert cfg.node_name == "hv9" and cfg.keepalive_interval == 1.5


def test_load_config_from_env(tmp_path, monkeypatch):
    path = tmp_path / "env.yaml"
    path.write_text("node: {name: from-env}\n")
    monkeypatch.setenv("PVCD_CONFIG_FILE", str(path))
    assert load_config().node_name == "from-env"


def test_explicit_path_wins_over_env(tmp_path, monkeypatch):
    (tmp_path / "env.yaml").write_text("node: {name: from-env}\n")
    (tmp_path / "arg.yaml").write_text("node: {name: from-arg}\n")
    monkeypatch.setenv("PVCD_CONFIG_FILE", str(tmp_path / "env.yaml"))
    assert load_config(str(tmp_path / "arg.yaml")).node_name == "from-arg"


def test_default_path_used_without_argument_or_env(tmp_path, monkeypatch):
    path = tmp_path / "default.yaml"
    path.write_text("node: {name: from-default}\n")
    monkeypatch.delenv("PVCD_CONFIG_FILE", raising=False)
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_FILE", str(path))
    assert load_config().node_name == "from-default"


def test_empty_env_falls_back_to_default(tmp_path, monkeypatch):
    path = tmp_path / "default.yaml"
    path.write_text("node: {name: from-default}\n")
    monkeypatch.setenv("PVCD_CONFIG_FILE", "")
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_FILE", str(path))
    assert load_config().node_name == "from-default"


def test_load_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    assert load_config(str(path)) == DaemonConfig()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(InvalidInput) as exc:
        load_config(str(path))
    msg = str(exc.value)
    assert str(path) in msg and "No such file" in msg and "\n" not in msg


def test_missing_file_from_env(tmp_path, monkeypatch):
    path = tmp_path / "gone.yaml"
    monkeypatch.setenv("PVCD_CONFIG_FILE", str(path))
    with pytest.raises(InvalidInput, match="gone.yaml"):
        load_config()


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(InvalidInput) as exc:
        load_config(str(tmp_path))
    assert str(tmp_path) in str(exc.value)


def test_invalid_file_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("vm: {flush_concurrency: x}\n")
    with pytest.raises(InvalidInput) as exc:
        load_config(str(path))
    assert str(path) in str(exc.value) and "$.vm.flush_concurrency" in str(exc.value)

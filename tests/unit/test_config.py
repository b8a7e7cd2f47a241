"""The service config: the example loads, and an admin's typo fails with FILE:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_loads_and_resolves_paths_beside_itself() -> None:
    config = load_config(ROOT / "config.example.toml")
    assert config.sip.address == ("127.0.0.1", 5060)
    assert config.resolve(config.dialplan.path) == ROOT / "dialplans" / "example.toml"
    assert config.resolve(config.storage.audit_journal) == ROOT / "var" / "audit-journal.jsonl"


def test_errors_name_the_file_and_line_of_the_offending_key(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        "[sidecar]\n"
        'link_secret = "0123456789abcdef0123"\n'
        "[[sidecar.tokens]]\n"
        'token = "0123456789abcdef0123"\n'
        'name = "a"\n'
        'role = "agent"\n'
        "[[sidecar.tokens]]\n"
        'token = "0123456789abcdef0124"\n'
        'name = "b"\n'
        'role = "boss"\n'
        "[media]\n"
        "prot_min = 3\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert sorted(caught.value.errors) == [
        f"{path}:10: sidecar.tokens[1].role: Input should be 'agent', 'supervisor', 'admin' "
        "or 'peer'",
        f"{path}:12: media.prot_min: unknown key",
    ]


def test_bad_toml_and_an_empty_port_range_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[sip\nlisten = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml:1"):
        load_config(broken)
    empty = tmp_path / "empty.toml"
    empty.write_text(
        '[sidecar]\nlink_secret = "0123456789abcdef0123"\n[media]\nport_min = 30000\n'
        "port_max = 30000\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="port_min must be below"):
        load_config(empty)


def test_a_realtime_priority_outside_sched_rr_range_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[sidecar]\nlink_secret = "0123456789abcdef0123"\n[scheduling]\nrealtime_priority = 100\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"bridge\.toml:4: scheduling\.realtime_priority"):
        load_config(path)


def test_a_media_timeout_is_off_by_default_and_never_below_a_second(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    head = '[sidecar]\nlink_secret = "0123456789abcdef0123"\n[media]\n'
    path.write_text(head, encoding="utf-8")
    assert load_config(path).media.timeout_s == 0
    path.write_text(head + "timeout_s = 60\n", encoding="utf-8")
    assert load_config(path).media.timeout_s == 60
    path.write_text(head + "timeout_s = 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bridge\.toml:4: media\.timeout_s.*at least 1"):
        load_config(path)


def test_media_workers_are_off_by_default_and_need_their_share_of_ports(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    head = '[sidecar]\nlink_secret = "0123456789abcdef0123"\n[media]\n'
    path.write_text(head, encoding="utf-8")
    assert load_config(path).media.workers == 0
    path.write_text(head + "port_min = 20000\nport_max = 20128\nworkers = 4\n", encoding="utf-8")
    assert load_config(path).media.workers == 4
    path.write_text(head + "port_min = 20000\nport_max = 20100\nworkers = 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"50 RTP port pairs, too few for 4 media workers"):
        load_config(path)
    path.write_text(head + "workers = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bridge\.toml:4: media\.workers"):
        load_config(path)


def test_a_storage_connection_limit_outside_1_to_200_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bridge.toml"
    head = '[sidecar]\nlink_secret = "0123456789abcdef0123"\n[storage]\n'
    path.write_text(head, encoding="utf-8")
    assert load_config(path).storage.max_connections == 8
    path.write_text(head + 'url = "postgresql://b@db/b"\nmax_connections = 3\n', encoding="utf-8")
    assert load_config(path).storage.max_connections == 3
    path.write_text(head + "max_connections = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bridge\.toml:4: storage\.max_connections"):
        load_config(path)

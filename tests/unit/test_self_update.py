"""Which of the updater's own port bindings stop a self-update: only host ports by number."""

from __future__ import annotations

from updater.actions.selfupdate import _host_ports


def test_numbered_host_ports_are_held_and_engine_picked_ones_are_not() -> None:
    inspect = {"HostConfig": {"PortBindings": {
        "8080/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
        "9090/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],  # -p 127.0.0.1::9090
        "53/udp": [{"HostPort": "0"}],
        "7000/tcp": None,
    }}}
    assert _host_ports(inspect) == ["8080->8080/tcp"]


def test_no_bindings_hold_nothing() -> None:
    assert _host_ports({"HostConfig": {"NetworkMode": "host", "PortBindings": {}}}) == []
    assert _host_ports({}) == []

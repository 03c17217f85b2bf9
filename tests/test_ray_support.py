"""The Ray connection index and scoring share: what it connects to, and that it closes only what it opened.

A stand-in ``ray`` module records the calls, so these run without the optional extra.
"""

from __future__ import annotations

import sys

import pytest

from contaudit.errors import InputError
from contaudit.ray_support import RayConnection, import_ray


class FakeRay:
    """Just what :class:`RayConnection` calls, recorded."""

    def __init__(self, initialized: bool = False):
        self.initialized, self.calls = initialized, []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(("init", kwargs))
        self.initialized = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown", {}))
        self.initialized = False

    def cluster_resources(self) -> dict:
        return {"CPU": 8.0}


@pytest.fixture
def fake_ray(monkeypatch):
    def install(initialized: bool = False) -> FakeRay:
        ray = FakeRay(initialized)
        monkeypatch.setitem(sys.modules, "ray", ray)
        return ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return install


def test_without_an_instance_or_address_it_starts_a_local_one_and_stops_it(fake_ray):
    ray = fake_ray()
    connection = RayConnection()
    assert connection.cluster_resources() is None and ray.calls == []
    assert connection.start_local(3) is ray
    assert ray.calls == [("init", {"address": "local", "num_cpus": 3, "include_dashboard": False,
                                   "logging_level": 30})]
    connection.close()
    connection.close()  # a second close does nothing
    assert ray.calls[1:] == [("shutdown", {})]


def test_ray_address_is_connected_at_once_and_disconnected_on_close(fake_ray, monkeypatch):
    ray = fake_ray()
    monkeypatch.setattr("contaudit.ray_support.check_reachable", lambda address: None)  # no host "head" here
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    connection = RayConnection()
    assert ray.calls == [("init", {"address": "ray://head:10001", "logging_level": 30})]
    assert connection.cluster_resources() == {"CPU": 8.0}
    connection.start_local(3)  # connected: no local instance
    connection.close()
    assert [name for name, _ in ray.calls] == ["init", "shutdown"]


def test_an_instance_the_caller_connected_to_is_left_running(fake_ray, monkeypatch):
    ray = fake_ray(initialized=True)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    connection = RayConnection()
    connection.start_local(3)
    connection.close()
    assert ray.calls == [] and ray.is_initialized()


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(InputError, match=r"--ray needs the optional extra: pip install 'contaudit\[ray\]'"):
        import_ray()


def test_a_ray_address_where_nothing_answers_fails_at_once_in_one_line(fake_ray, monkeypatch):
    """RAY_ADDRESS=localhost:1 was still waiting at 120 s, then gave a traceback (issue 23)."""
    import socket
    import time

    ray = fake_ray()
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    started = time.perf_counter()
    with pytest.raises(InputError, match=rf"RAY_ADDRESS='127.0.0.1:{port}': nothing answers there .*unset RAY_ADDRESS"):
        RayConnection()
    assert time.perf_counter() - started < 10 and ray.calls == []
    monkeypatch.setenv("RAY_ADDRESS", "no-port-here")
    with pytest.raises(InputError, match="is not an address Ray connects to"):
        RayConnection()


def test_a_reachable_ray_address_is_handed_to_ray(fake_ray, monkeypatch):
    import socket

    ray = fake_ray()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{server.getsockname()[1]}")
        RayConnection()
    assert [name for name, _ in ray.calls] == ["init"]

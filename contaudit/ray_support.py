"""Ray, the optional distributed engine (``pip install 'contaudit[ray]'``), shared by index and scoring."""

from __future__ import annotations

import logging
import os

from contaudit.errors import InputError


def import_ray():
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs the optional extra: pip install 'contaudit[ray]'") from None
    return ray


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail at once, in one line, when nothing answers at ``RAY_ADDRESS`` (``ray.init`` would wait for
    minutes: ``localhost:1`` was still waiting at 120 s). ``auto`` and ``local`` are Ray's to resolve."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"RAY_ADDRESS={address!r} is not an address Ray connects to: expected HOST:PORT, "
                         f"ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise InputError(f"RAY_ADDRESS={address!r}: nothing answers there ({e.strerror or e}); start the Ray cluster, "
                         f"or unset RAY_ADDRESS to run on a local instance") from None


class RayConnection:
    """Ray for one run: the instance this process is already connected to, else the cluster at
    ``RAY_ADDRESS`` (connected when this is made), else a local instance (:meth:`start_local`).

    :meth:`close` disconnects, and stops a local instance, only when this connection made
    them; an instance the caller connected to is left running.

    Example::

        connection = RayConnection()
        ray = connection.start_local(num_cpus=4)  # no-op when connected
        try:
            ...
        finally:
            connection.close()
    """

    def __init__(self):
        self.ray = import_ray()
        self.owned = False  # whether close() disconnects
        address = os.environ.get("RAY_ADDRESS")
        if not self.ray.is_initialized() and address:
            check_reachable(address)
            try:
                self.ray.init(address=address, logging_level=logging.WARNING)
            except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError for a bad address
                raise InputError(f"RAY_ADDRESS={address!r}: Ray could not connect ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else 'no detail'}); start the cluster there, "
                                 f"or unset RAY_ADDRESS to run on a local instance") from None
            self.owned = True

    def cluster_resources(self) -> dict | None:
        """The resources of the instance connected to (``ray.cluster_resources()``), or None before one."""
        return self.ray.cluster_resources() if self.ray.is_initialized() else None

    def start_local(self, num_cpus: int):
        """Unless connected, start a local instance of ``num_cpus`` CPUs; return the ``ray`` module."""
        if not self.ray.is_initialized():
            self.ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
            self.owned = True
        return self.ray

    def close(self) -> None:
        """Disconnect (stopping a local instance) if this connection connected; safe to call twice."""
        if self.owned:
            self.owned = False
            self.ray.shutdown()

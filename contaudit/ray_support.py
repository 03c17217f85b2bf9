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
            self.ray.init(address=address, logging_level=logging.WARNING)
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

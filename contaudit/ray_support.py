"""Ray, the optional distributed engine (``pip install 'contaudit[ray]'``), shared by index and scoring."""

from __future__ import annotations

from contaudit.errors import InputError


def import_ray():
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs the optional extra: pip install 'contaudit[ray]'") from None
    return ray

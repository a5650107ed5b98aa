"""Named mesh topologies (faces + landmark placement) that methods output.

Room: lookup from a topology name to :class:`benchmark.types.Topology`. Topologies of the
shipped ICT model are always available; others (``bfm-front``, ``flame``) are built by the
adapters that read a user's model files and registered with :func:`register_topology`.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmark.types import Topology

_FACTORIES: dict[str, Callable[[], Topology]] = {}
_CACHE: dict[str, Topology] = {}


def register_topology(name: str, factory: Callable[[], Topology]) -> None:
    """Registers a lazily built topology under ``name``."""
    _FACTORIES[name] = factory
    _CACHE.pop(name, None)


def get_topology(name: str) -> Topology:
    """The topology registered as ``name`` (built on first use)."""
    if name not in _CACHE:
        if name not in _FACTORIES:
            raise KeyError(f"unknown topology {name!r}; known: {', '.join(sorted(_FACTORIES))}.")
        _CACHE[name] = _FACTORIES[name]()
    return _CACHE[name]


def registered_name(topo: Topology) -> str | None:
    """The name ``topo`` is registered under, if it is the instance get_topology returns.

    Another process can then rebuild it from the name alone; None for any other topology.
    """
    return topo.name if _CACHE.get(topo.name) is topo else None


def _ict(region: str) -> Callable[[], Topology]:
    def build() -> Topology:
        from methods.facemodel.ict import load_ict

        return load_ict(region).topology()

    return build


register_topology("ict-narrow", _ict("narrow"))
register_topology("ict-full", _ict("full"))

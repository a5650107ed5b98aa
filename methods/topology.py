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
    """The name of ``topo`` if it is one this module registers, as get_topology builds it.

    Such a topology can be rebuilt in another process from its name alone (a scoring worker
    imports nothing else); None for any other topology, also one registered by the module
    of a method (the worker would not have imported it).
    """
    name = topo.name
    if _CACHE.get(name) is topo and name in _BUILT_IN and _FACTORIES[name] is _BUILT_IN[name]:
        return name
    return None


def _ict(region: str) -> Callable[[], Topology]:
    def build() -> Topology:
        from methods.facemodel.ict import load_ict

        return load_ict(region).topology()

    return build


register_topology("ict-narrow", _ict("narrow"))
register_topology("ict-full", _ict("full"))
_BUILT_IN = dict(_FACTORIES)  # what any process has after importing this module

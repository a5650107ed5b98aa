"""A small lazy registry used three times: methods, datasets and metrics.

Room: name -> object lookup for the whole suite. Targets may be given as ``"module:attr"``
strings so that listing names never imports a heavy module; the target is imported on first
:meth:`Registry.get`.

Example::

    METHODS = Registry("method", {"mean-shape": "methods.mean_shape:MeanShape"})
    cls = METHODS.get("mean-shape")
    METHODS.select("all")            # every name, in registration order
    METHODS.select("fit-*,mean-shape", exclude="*-elam")
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a plain sentence.
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object map with lazy ``"module:attr"`` targets and helpful errors.

    Args:
        kind: what is registered ("method", "dataset", "metric"), used in messages.
        entries: initial name -> object or ``"module:attr"`` mapping.
    """

    def __init__(self, kind: str, entries: Mapping[str, T | str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        for name, target in (entries or {}).items():
            self.register(name, target)

    def register(self, name: str, target: T | str) -> None:
        """Adds ``name``; raises ``ValueError`` if it is already taken."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered.")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Removes ``name`` (used by tests that register temporary entries)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """All registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing it if it was lazy."""
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        target = self._entries[name]
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            module = importlib.import_module(module_name)
            target = getattr(module, attr)
            self._entries[name] = target
        return target  # type: ignore[return-value]

    def select(self, patterns: str | Iterable[str], exclude: str | Iterable[str] = ()) -> list[str]:
        """Names matching comma-separated names or globs; ``all`` selects everything.

        A pattern without glob characters must name a registered entry exactly, otherwise an
        :class:`UnknownNameError` with suggestions is raised. A glob that matches nothing
        raises too.
        """
        pats = _split(patterns)
        excl = _split(exclude)
        chosen: list[str] = []
        for pat in pats:
            if pat == "all":
                matched = self.names()
            elif any(ch in pat for ch in "*?["):
                matched = [n for n in self.names() if fnmatch.fnmatchcase(n, pat)]
                if not matched:
                    raise UnknownNameError(
                        f"no {self.kind} matches {pat!r}; registered: {', '.join(self.names())}."
                    )
            else:
                if pat not in self._entries:
                    raise UnknownNameError(self._unknown_message(pat))
                matched = [pat]
            chosen.extend(n for n in matched if n not in chosen)
        return [n for n in chosen if not any(fnmatch.fnmatchcase(n, e) for e in excl)]

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}.{hint} "
            f"Registered: {', '.join(self.names())}."
        )

    def items(self) -> list[tuple[str, Any]]:
        """(name, object) pairs, importing lazy targets."""
        return [(n, self.get(n)) for n in self.names()]


def _split(value: str | Iterable[str]) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]

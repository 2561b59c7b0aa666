"""A tiny name -> object registry, shared by models, distribution families and VAE priors.

Adding an entry is one decorator at the definition site; nothing else changes.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from ..errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what  # used in error messages: "unknown <what> 'x'"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def remove(self, name: str) -> T:
        """Unregister ``name`` (a plugin unloaded, a test's temporary entry); returns the entry."""
        self.get(name)  # an unknown name raises the usual one-line error
        return self._entries.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.what, name, self._entries)) from None


def unknown_name_message(what: str, name: str, known, where: str = "") -> str:
    """'unknown model 'resnet5'; did you mean resnet50, resnet18?' - one line (``where``: e.g. "in model.pth")."""
    from ..escape import error_value

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6) if len(name) <= 200 else []
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {what} {error_value(name)}{' ' + where if where else ''}{hint}"

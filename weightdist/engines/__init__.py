"""Engines run a scan's units of work on workers: a local process pool, Ray or Dask.

An engine is one file in this folder holding one :class:`Engine` subclass decorated with
``@register_engine``; the folder's modules are imported on first use, so adding an engine
edits nothing else. Engines only move small picklable calls and their results; workers open
the weights themselves. Each engine retries a unit whose worker died once, then reports it
as :class:`WorkerDied`.
"""
from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator

from ..core.registry import Registry, unknown_name_message
from ..errors import UnknownNameError, WeightdistError


class EngineUnavailable(WeightdistError):
    """An engine whose optional dependency is not installed, or whose cluster cannot be reached."""


@dataclass(frozen=True)
class WorkerDied:
    """The outcome of a unit whose worker process died twice (once, then on its retry)."""

    detail: str


class Engine(ABC):
    """Runs ``fn(item)`` for many items on workers; a context manager that starts and stops them.

    ``workers``: how many processes to start (ignored when joining a cluster with ``address``).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    extra: ClassVar[str | None] = None  # the pip extra that installs this engine's dependency

    def __init__(self, workers: int, address: str | None = None) -> None:
        from ..pipeline import check_workers

        check_workers(workers)
        self.workers = workers
        self.address = address

    def __enter__(self) -> "Engine":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def start(self) -> None:
        """Start (or join) the workers."""

    @abstractmethod
    def close(self) -> None:
        """Stop what ``start`` started."""

    @abstractmethod
    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, fn(item))`` as units finish, starting them in the order given.

        A unit whose worker process dies is retried once; if it dies again its result is a
        :class:`WorkerDied`. ``fn`` itself should not raise (scan's unit functions return
        their failures), so any exception it does raise is a bug and propagates.
        """

    def missing_extra(self, module: str) -> EngineUnavailable:
        return EngineUnavailable(f"--engine {self.name} needs the '{module}' package; install it with "
                                 f"pip install 'weightdist[{self.extra}]'")


ENGINES: Registry[type[Engine]] = Registry("engine")
_discovered = False


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make ``cls`` available as ``--engine <cls.name>``."""
    ENGINES.add(cls.name, cls)
    return cls


def _discover() -> None:
    """Import every module of this folder once, so each registers its engine (no list of names)."""
    global _discovered
    if not _discovered:
        _discovered = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")


def engine_names() -> list[str]:
    _discover()
    return ENGINES.names()


def get_engine(name: str, workers: int, address: str | None = None) -> Engine:
    """An engine instance by name; an unknown name is one line listing the known ones."""
    _discover()
    if name not in ENGINES:
        raise UnknownNameError(unknown_name_message("engine", name, ENGINES.names()) + f"; choose from {', '.join(ENGINES.names())}")
    return ENGINES.get(name)(workers, address)


__all__ = ["Engine", "EngineUnavailable", "WorkerDied", "ENGINES", "register_engine", "engine_names", "get_engine"]

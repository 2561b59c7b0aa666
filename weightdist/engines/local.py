"""The default engine: a local process pool (concurrent.futures, spawned), nothing to install or start.

At most two units per worker are in flight, so when a worker dies the units that may have been
running are known. They are retried one at a time in a fresh pool: a unit that kills its worker
again is reported as :class:`WorkerDied`, and its innocent neighbours of the first death succeed.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

from ..pipeline import default_workers, exit_with_parent
from . import Engine, EngineUnavailable, WorkerDied, register_engine

MAX_FRUITLESS_POOLS = 6  # a unit that kills its worker breaks at most two pools in a row
# Units handed to the pool per worker: the second waits in the pool's queue, so a worker starts its next unit
# the moment it sends a result instead of idling for the round trip through the driver.
IN_FLIGHT_PER_WORKER = 2


def _init_worker() -> None:
    """One thread per worker process (the pool is the parallelism), and no worker outlives its driver.

    A killed driver cannot shut its pool down; its workers would wait for work forever, so each
    watches its parent and exits when it is gone. One BLAS thread is also what Ray and Dask give
    their workers, and OpenBLAS rounds its threaded dot products differently: same numbers on every engine."""
    import sys

    from threadpoolctl import threadpool_limits

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # for libraries not loaded yet
        os.environ[var] = "1"
    threadpool_limits(limits=1)  # and for those spawn already loaded (the parent's __main__ is re-imported first)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker must not run the CLI's SIGTERM cleanup: just exit
    exit_with_parent()


@register_engine
class LocalEngine(Engine):
    name = "local"
    description = "a process pool on this machine (default)"

    def start(self) -> None:
        if self.address:
            raise EngineUnavailable("--address goes with --engine ray or --engine dask; the local engine starts its own processes")
        self._context = multiprocessing.get_context("spawn")  # workers are the driver's children: they see it die
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.workers = min(self.workers, default_workers())  # more processes than cores only add memory
        self._pool = ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_init_worker)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        pool = self._pool or self._new_pool()
        todo, retry = deque(enumerate(items)), deque()
        deaths: Counter = Counter()
        running: dict[Future, tuple[int, Any]] = {}
        fruitless = 0  # pools in a row that died before finishing anything

        def fill() -> None:
            if retry:  # a suspect of a worker death runs alone, so a second death is its own
                if not running:
                    key, item = retry.popleft()
                    running[pool.submit(fn, item)] = (key, item)
            else:
                while todo and len(running) < IN_FLIGHT_PER_WORKER * self.workers:
                    key, item = todo.popleft()
                    running[pool.submit(fn, item)] = (key, item)

        while todo or retry or running:
            fill()
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done = list(running)  # the pool is unusable: everything still running died with it
            broken, finished = False, []
            for future in done:
                key, item = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    deaths[key] += 1
                    if deaths[key] >= 2:
                        finished.append((item, WorkerDied("its worker process died, and again on the retry")))
                    else:
                        retry.append((key, item))
                    continue
                fruitless = 0
                finished.append((item, result))
            if broken:
                fruitless += 1
                if fruitless >= MAX_FRUITLESS_POOLS:
                    yield from finished
                    raise EngineUnavailable(f"local worker processes died {fruitless} times in a row without finishing a unit; "
                                            "run the command from a script file (not stdin), check memory, or use --workers 1")
                pool = self._new_pool()
            fill()  # the next units start before the caller handles these (a scan commits each), not after
            yield from finished

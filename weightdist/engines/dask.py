"""Dask: a ``distributed.LocalCluster`` of --workers processes, or a scheduler with ``--address``.

The local cluster's scheduler allows one failure per task (``allowed-failures=1``): a unit
whose worker dies is retried once, then raises KilledWorker, which becomes :class:`WorkerDied`.
Priorities keep the largest-first order; one thread per worker.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from . import Engine, EngineUnavailable, WorkerDied, register_engine


@register_engine
class DaskEngine(Engine):
    name = "dask"
    description = "Dask distributed: a LocalCluster of --workers processes, or a scheduler at --address"
    extra = "dask"

    def start(self) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise self.missing_extra("distributed") from None
        self._cluster = None
        # One retry after a worker death, and a worker is only handed the unit it runs.
        with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}):
            try:
                if self.address:
                    self._client = Client(self.address, timeout="10s")
                else:
                    self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                                 dashboard_address=None, silence_logs=50)
                    self._client = Client(self._cluster)
            except (OSError, TimeoutError) as exc:
                raise EngineUnavailable(f"cannot reach the Dask scheduler at {self.address}: {' '.join(str(exc).split())[:200]}; "
                                        "check the address or use --engine local") from None

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        items = list(items)
        futures = {self._client.submit(fn, item, pure=False, priority=len(items) - i): item for i, item in enumerate(items)}
        for future in as_completed(futures):
            item = futures.pop(future)
            try:
                result = future.result()
            except KilledWorker as exc:
                result = WorkerDied(f"its Dask worker died, and again on the retry ({exc.__class__.__name__})")
            future.release()
            yield item, result

"""Ray: a local Ray started with ``ray.init(num_cpus=N)``, or an existing cluster with ``--address``.

Ray retries a task whose worker died (``max_retries=1``) and then raises WorkerCrashedError,
which becomes :class:`WorkerDied`. At most two units per worker are queued at a time, so the
largest-first order holds and results never pile up on the driver.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

from . import Engine, EngineUnavailable, WorkerDied, register_engine

# Environment the workers need to find weights (a local Ray inherits the rest of the driver's).
FORWARDED_ENV = ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "XDG_CACHE_HOME")


@register_engine
class RayEngine(Engine):
    name = "ray"
    description = "Ray: a local Ray with --workers CPUs, or a running cluster with --address"
    extra = "ray"

    def start(self) -> None:
        try:
            import ray
        except ImportError:
            raise self.missing_extra("ray") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if not self._started:
            return  # a notebook that already called ray.init: use it as it is
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                      runtime_env={"env_vars": env} if env else None)
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.workers, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise EngineUnavailable(f"cannot start {where}: {' '.join(str(exc).split())[:200]}; "
                                    "check the address (ray status on the head node) or use --engine local") from None

    def close(self) -> None:
        if getattr(self, "_started", False):
            self._ray.shutdown()

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(fn)
        cpus = int(ray.cluster_resources().get("CPU", self.workers)) or 1
        todo = list(items)
        todo.reverse()  # pop() from the end keeps the given order
        running: dict[Any, Any] = {}
        while todo or running:
            while todo and len(running) < 2 * cpus:
                item = todo.pop()
                running[remote.remote(item)] = item
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                item = running.pop(ref)
                try:
                    result = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.OutOfMemoryError) as exc:
                    result = WorkerDied(f"its Ray worker died, and again on the retry ({type(exc).__name__})")
                yield item, result

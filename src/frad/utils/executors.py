"""Where a run's independent tasks execute: in this process, or on a Ray cluster.

An executor maps a *worker* over tasks and yields each result as it arrives, tagged with
the task's position.  A worker is built once per process that runs tasks, from a factory
(a picklable callable that returns the worker), so a worker that holds a face network keeps
it loaded across tasks: in this process for :class:`LocalExecutor`, in a Ray actor for
:class:`RayExecutor`.  Tasks carry their own inputs and results come back to the caller,
so no shared filesystem is assumed; the caller alone writes results to disk.

Ray is an optional extra (``pip install 'frad[ray]'``) and is imported only when a
:class:`RayExecutor` is used.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..errors import ConfigError

__all__ = ["Executor", "ExecutorSpec", "LocalExecutor", "RayExecutor", "create_executor"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``worker(task)`` for every task; yields ``(index, result)`` as results arrive.

    ``tasks`` is read lazily, a few tasks ahead of the results, so a generator that prepares
    each task's inputs on demand keeps memory bounded."""

    def imap(self, factory: Callable[[], Callable[[T], R]], tasks: Iterable[T]) -> Iterator[tuple[int, R]]: ...

    def close(self) -> None:
        """Release what the executor holds between maps (Ray: its actors)."""


@dataclass(frozen=True)
class ExecutorSpec:
    """Which executor runs a run's tasks: ``local`` (this process) or ``ray`` (an optional
    cluster ``address``; None starts or joins a local one), with at most ``workers`` actors
    (None: one per CPU, or per GPU when the cluster has GPUs)."""

    kind: str = "local"
    address: str | None = None
    workers: int | None = None

    KINDS = ("local", "ray")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ConfigError(f"executor: unknown kind {self.kind!r}; expected one of {', '.join(self.KINDS)}")
        if self.kind == "local" and self.address:
            raise ConfigError("executor: an address is only for the ray executor (ray:ADDRESS)")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise ConfigError(f"executor: workers must be an int >= 1 or null, got {self.workers!r}")

    @classmethod
    def parse(cls, text: str) -> ExecutorSpec:
        """``local``, ``ray`` or ``ray:ADDRESS`` (as ``--executor`` takes it)."""
        kind, _, address = text.partition(":")
        return cls(kind=kind.strip().lower(), address=address.strip() or None)

    def __str__(self) -> str:
        return self.kind + (f":{self.address}" if self.address else "")


class LocalExecutor:
    """Runs every task here, in order, with one worker."""

    def close(self) -> None:
        """Nothing to release: each map's worker ends with the map."""

    def imap(self, factory: Callable[[], Callable[[T], R]], tasks: Iterable[T]) -> Iterator[tuple[int, R]]:
        worker = None
        try:
            for i, task in enumerate(tasks):
                if worker is None:  # built only when there is work
                    worker = factory()
                yield i, worker(task)
        finally:
            if worker is not None:
                _close(worker)


def _close(worker: Any) -> None:
    close = getattr(worker, "close", None)
    if callable(close):
        close()


class _Actor:
    """The Ray actor body: holds one worker at a time, built from the factory a task names.

    The factory travels as an object-store reference wrapped in a list (so Ray does not
    resolve it for every task); the actor fetches and builds it only when a task names a
    new map.  A restarted actor (its process died) rebuilds it from the task it retries."""

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.key: str | None = None
        self.worker: Any = None

    def run(self, key: str, factory: list[Any], task: Any) -> Any:
        if key != self.key:
            import ray

            self.release()
            self.worker, self.key = ray.get(factory[0])(), key
        return self.worker(task)

    def release(self) -> None:
        if self.worker is not None:
            _close(self.worker)
        self.worker, self.key = None, None


class RayExecutor:
    """Runs tasks on Ray actors that live as long as the executor (a run's feature and attack
    stages share them, so actor processes start once); each map builds its worker once per actor.

    An actor whose process dies is restarted and its task retried (``max_restarts`` and
    ``max_task_retries``), so every task yields exactly one result.  Each actor asks for a
    GPU when the cluster has them.  ``address`` None joins the cluster that ``RAY_ADDRESS``
    names or starts a local one (with ``num_cpus`` CPUs)."""

    def __init__(self, address: str | None = None, *, workers: int | None = None, num_cpus: int | None = None,
                 max_retries: int = 3) -> None:
        self.address = address
        self.workers = workers
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self._actors: list[Any] = []
        self._threads = 1

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor ray: Ray is not installed; pip install 'frad[ray]'") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
            if self.address:
                kwargs["address"] = self.address
            elif self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"executor ray:{self.address or ''}: cannot reach the Ray cluster ({exc})") from None
        return ray

    def imap(self, factory: Callable[[], Callable[[T], R]], tasks: Iterable[T]) -> Iterator[tuple[int, R]]:
        todo = enumerate(tasks)
        first = next(todo, None)
        if first is None:
            return
        ray = self._ray()
        if not self._actors:  # sized once, from the cluster as it is at the first map
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            cpus = max(1, int(resources.get("CPU", 1)))
            self._n = max(1, self.workers or (gpus or cpus))
            self._threads = max(1, cpus // self._n)
            self._remote = ray.remote(num_cpus=min(self._threads, cpus), num_gpus=1 if gpus else 0,
                                      max_restarts=self.max_retries, max_task_retries=self.max_retries)(_Actor)
        key = uuid.uuid4().hex
        factory_ref = [ray.put(factory)]  # sent once through the object store, built in each actor that runs a task
        used: list[Any] = []
        pending: dict[Any, tuple[int, Any]] = {}  # result ref -> (task index, the actor running it)
        free = list(self._actors)
        nxt: tuple[int, T] | None = first
        try:
            while nxt is not None or pending:
                while nxt is not None and (free or len(self._actors) < self._n):
                    if not free:  # actors start as tasks arrive: no more actors than tasks
                        self._actors.append(self._remote.remote(self._threads))
                        free.append(self._actors[-1])
                    actor = free.pop()
                    if actor not in used:
                        used.append(actor)
                    pending[actor.run.remote(key, factory_ref, nxt[1])] = (nxt[0], actor)
                    nxt = next(todo, None)
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                i, actor = pending.pop(ref)
                free.append(actor)
                yield i, ray.get(ref)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            for a in used:  # free the models; the actors stay for the next map
                with contextlib.suppress(Exception):
                    a.release.remote()

    def close(self) -> None:
        """End the actors (they also end with the driver)."""
        import ray

        for a in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        self._actors = []


def create_executor(spec: ExecutorSpec | str | None) -> Executor:
    """The executor a spec (or ``--executor`` text) names; None is the local one."""
    if spec is None:
        return LocalExecutor()
    if isinstance(spec, str):
        spec = ExecutorSpec.parse(spec)
    if spec.kind == "local":
        return LocalExecutor()
    return RayExecutor(spec.address, workers=spec.workers)

"""Several processes on one job: which rank this is, its device, its share of the work, and the
few collective steps between them.

A launcher such as ``torchrun --nproc_per_node N`` (or a multi-node scheduler) starts N copies of a
command and tells each who it is through the environment: ``RANK`` (0 … WORLD_SIZE-1, across all
nodes), ``WORLD_SIZE`` and ``LOCAL_RANK`` (its index on its own node, which picks its GPU), plus
``MASTER_ADDR`` / ``MASTER_PORT`` where rank 0 listens.  Without them a command is one process,
world size 1, and nothing here touches ``torch.distributed``.

Meant for reuse by any loop that splits a fixed list of work items among ranks (the feature
extraction in :mod:`alkit.data.features` uses all of it; a fine-tuning loop's re-embedding can too):

* :func:`world_from_env` — a :class:`World` (rank, size, local rank) read and checked from the
  environment, a pure function of the mapping it is given;
* :func:`owned` — the items a rank computes (round robin: every item exactly once, shares within one
  item of each other, and the same for any device or batch size);
* :func:`rank_device` — the device of a rank (``cuda:LOCAL_RANK`` when CUDA is asked for);
* :func:`process_group` — initialise ``torch.distributed`` (gloo on CPU, nccl on CUDA) only when the
  world size is above 1 and no group exists yet, and tear down only what it started;
* :func:`barrier`, :func:`broadcast`, :func:`all_gather`, :func:`on_main`, :func:`main_first` — the
  collective steps, each a no-op (or the identity) for a world of one; a failure on rank 0 inside
  :func:`on_main` / :func:`main_first` is raised on every rank (:class:`RankFailed`).

The pattern the extraction follows, and a re-embedding can copy: rank 0 alone does what must happen
once (check or discard a cache, start a progress record), :func:`broadcast` its decision, every
rank computes its :func:`owned` items and writes each atomically, :func:`all_gather` reports
(a failure on one rank then stops every rank with its message instead of leaving them waiting), and
rank 0 writes the final record last.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import torch
import torch.distributed as dist

from alkit.checks import ParameterError

#: The variables a launcher sets; the names appear in every error message about them.
ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"
#: How long a collective step waits for the slowest rank.  Long, because the barrier after the
#: computation waits for the slowest rank's whole share; when one rank fails, torchrun ends the
#: others, so a long wait does not leave a failed job hanging under torchrun.
COLLECTIVE_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one job (``World()`` is a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes what must be written once."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"


SINGLE = World()


class Failure(NamedTuple):
    """What the other ranks are told when one fails: its message, and the parameter it names."""

    text: str
    param: str | None = None


class RankFailed(ParameterError):
    """Another rank stopped with an error; the message names the rank and repeats its error, with
    its parameter (a ValueError, so that a command reports it on every rank as one line, like the
    error itself)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.text, param=failure.param)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``: CUDA when present, else the CPU; a CUDA device asked for without CUDA is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}", param="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device 'cuda' was asked for but no CUDA GPU is available; use device 'cpu'",
                             param="device")
    if dev.type not in ("cpu", "cuda"):
        raise ParameterError(f"device must be 'cpu' or 'cuda', got {device!r}", param="device")
    return dev


def failure_report(exc: BaseException, world: World) -> Failure:
    """What the other ranks are told when this one fails."""
    return Failure(f"{world} stopped: {str(exc) or type(exc).__name__}", getattr(exc, "param", None))


def raise_failures(reports: list[Failure | None], world: World) -> None:
    """Raise :class:`RankFailed` naming the first rank whose report is a failure text (see
    :func:`all_gather`): every rank then stops with the same message instead of waiting."""
    for rank, report in enumerate(reports):
        if report is not None and rank != world.rank:
            raise RankFailed(report)


def _int_setting(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number; it is set by the launcher (torchrun), "
                         f"unset it to run one process") from None


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The :class:`World` described by ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in ``environ``
    (default ``os.environ``); a single process when none is set.  Inconsistent settings raise a
    ``ValueError`` that names the variable and the fix."""
    environ = os.environ if environ is None else environ
    rank, size, local = (_int_setting(environ, n) for n in (ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK))
    if rank is None and size is None:
        if local not in (None, 0):
            raise ValueError(f"{ENV_LOCAL_RANK}={local} is set without {ENV_RANK} and {ENV_WORLD_SIZE}: launch "
                             f"with torchrun (which sets all three) or unset {ENV_LOCAL_RANK}")
        return SINGLE
    if size is None or rank is None:
        given, missing = (ENV_RANK, ENV_WORLD_SIZE) if size is None else (ENV_WORLD_SIZE, ENV_RANK)
        raise ValueError(f"{given} is set but {missing} is not: launch with torchrun (which sets {ENV_RANK}, "
                         f"{ENV_WORLD_SIZE} and {ENV_LOCAL_RANK}) or unset {given} to run one process")
    if size < 1:
        raise ValueError(f"{ENV_WORLD_SIZE}={size}: the number of processes must be ≥ 1; launch with torchrun "
                         "or unset it to run one process")
    if not 0 <= rank < size:
        raise ValueError(f"{ENV_RANK}={rank} with {ENV_WORLD_SIZE}={size}: {ENV_RANK} must be 0 … {size - 1}; "
                         f"launch with torchrun, which numbers the processes itself")
    if local is None:
        local = rank if size == 1 else None
        if local is None:
            raise ValueError(f"{ENV_LOCAL_RANK} is not set ({ENV_RANK}={rank}, {ENV_WORLD_SIZE}={size}): set it to "
                             "this process's index on its own node, or launch with torchrun")
    if not 0 <= local <= rank:
        raise ValueError(f"{ENV_LOCAL_RANK}={local} with {ENV_RANK}={rank}: the index on a node must be 0 … "
                         f"{ENV_RANK}; launch with torchrun, which numbers the processes itself")
    if size > 1:
        missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(n)]
        if missing:
            raise ValueError(f"{ENV_WORLD_SIZE}={size} but {' and '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} not set: rank 0's address is needed to "
                             "meet; launch with torchrun (which sets them) or set them")
    return World(rank, size, local)


def owned(n_items: int, world: World) -> range:
    """The items ``0 … n_items-1`` that ``world.rank`` computes: every ``size``-th from its rank.

    Over all ranks each item is owned exactly once; shares differ by at most one item, and a short
    last item (a partial shard) costs no rank more than one item's work.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be ≥ 0, got {n_items}")
    return range(world.rank, n_items, world.size)


def rank_device(device: torch.device, world: World) -> torch.device:
    """``device`` as this rank uses it: a CUDA device without an index becomes ``cuda:LOCAL_RANK``
    (each rank on a node its own GPU); CPU and explicit indices are kept."""
    if device.type != "cuda" or device.index is not None or not world.is_distributed:
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise ValueError(f"{ENV_LOCAL_RANK}={world.local_rank} but this node has {count} CUDA GPU"
                         f"{'s' if count != 1 else ''}: start at most {count} processes per node "
                         f"(torchrun --nproc_per_node {count}) or pass --device cpu")
    return torch.device("cuda", world.local_rank)


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[bool]:
    """Within the block, ``torch.distributed`` is initialised when ``world`` has several ranks.

    Starts a group only when none exists (a caller's group, e.g. a training loop's, is used as it
    is and left running) and destroys only the group it started.  Yields whether it started one.
    """
    started = False
    if world.is_distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend_for(device), rank=world.rank, world_size=world.size,
                                timeout=COLLECTIVE_TIMEOUT)
        started = True
    elif world.is_distributed and dist.get_world_size() != world.size:
        raise ValueError(f"{ENV_WORLD_SIZE}={world.size} but the running process group has "
                         f"{dist.get_world_size()} ranks; launch with a consistent {ENV_WORLD_SIZE}")
    try:
        yield started
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def _group_device(world: World) -> list[int] | None:
    """The device ids nccl's barrier needs (its own GPU), None for gloo."""
    if dist.get_backend() == "nccl":
        return [torch.cuda.current_device()]
    return None


def barrier(world: World) -> None:
    """Wait until every rank has arrived (nothing for a single process)."""
    if not world.is_distributed:
        return
    ids = _group_device(world)
    dist.barrier(device_ids=ids) if ids else dist.barrier()


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object; the identity for a single process)."""
    if not world.is_distributed:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` for a single process)."""
    if not world.is_distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], Any], world: World) -> Any:
    """``fn()`` run by rank 0 alone (what must happen once: check a cache, start a record); its
    result, which must pickle, on every rank, and its failure raised on every rank."""
    if not world.is_distributed:
        return fn()
    if world.is_main:
        try:
            result = fn()
        except Exception as exc:
            broadcast((failure_report(exc, world), None), world)
            raise
        broadcast((None, result), world)
        return result
    failure, result = broadcast(None, world)
    if failure is not None:
        raise RankFailed(failure)
    return result


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. unpacking an archive into a shared cache), the other ranks
    after it has finished, when they find its result in place."""
    if not world.is_main:
        failure = broadcast(None, world)
        if failure is not None:
            raise RankFailed(failure)
        yield
        return
    try:
        yield
    except Exception as exc:
        broadcast(failure_report(exc, world), world)
        raise
    broadcast(None, world)


def is_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is rank 0 (or the only one): the one that prints a command's result."""
    environ = os.environ if environ is None else environ
    return _int_setting(environ, ENV_RANK) in (None, 0)


__all__ = ["COLLECTIVE_TIMEOUT", "Failure", "RankFailed", "SINGLE", "World", "all_gather", "backend_for", "barrier", "broadcast",
           "failure_report", "is_main_process", "main_first", "on_main", "owned", "process_group", "raise_failures",
           "rank_device", "world_from_env"]

"""Data-parallel training: what ``torchrun`` tells a process, the process group, and the few
collectives the training loop needs.

``torchrun --nproc_per_node=K scripts/train.py ...`` starts K copies of the script with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. ``DistEnv.from_env`` reads them (none set: one plain process),
``distributed_session`` joins the process group (gloo on CPU, nccl on CUDA) and yields a
``Distributed``: the rank, the device and the collectives, all of which are no-ops when the world
has one process, so the training loop has one code path.

How the ranks share the work (see ``torch_lm.training.trainer``):

* every rank draws the same global batch of ``batch_size`` rows for step s and keeps its slice of
  ``batch_size / K`` rows (``BatchSampler``), so K ranks see exactly the rows one process sees;
* ``DistributedDataParallel`` averages the gradients; each rank's loss is the mean over its
  ``B/K`` rows, so the average is the mean over all ``B`` rows — the single-process gradient;
* the held-out loss is computed on contiguous shards of the val positions, one per rank, and the
  (sum of losses, positions) pairs are summed with ``all_reduce``: every position is counted
  exactly once, all ranks get the same figure, and evaluation is K times faster than on rank 0
  alone;
* stop decisions (SIGINT, the time budget, a non-finite loss) are agreed on collectively, so no
  rank leaves a collective its peers are waiting in;
* only rank 0 writes TensorBoard events, ``metrics.jsonl``, checkpoints and the progress bar.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from numpy_ref.validation import fail
from torch_lm.training.config import resolve_device

# The variables torchrun sets for every worker; a process launched without them is alone.
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """The process group could not be formed (bad launch environment, unreachable peers)."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: global ``rank`` in ``[0, world_size)`` and ``local_rank``
    on its machine (which GPU it takes)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (a single process if none is set).

        Raises ``ValueError`` naming the variable when they are partial or malformed, and when a
        multi-process job lacks ``MASTER_ADDR``/``MASTER_PORT`` (i.e. it was not started by
        torchrun), rather than letting the process-group setup fail obscurely or hang.
        """
        environ = os.environ if environ is None else environ
        present = [name for name in RANK_VARIABLES if name in environ]
        if not present:
            return cls()
        if len(present) != len(RANK_VARIABLES):
            missing = [name for name in RANK_VARIABLES if name not in environ]
            raise ValueError(
                f"distributed launch: {', '.join(present)} set but "
                f"{', '.join(missing)} not; start data-parallel runs with torchrun"
            )
        values = {}
        for name in RANK_VARIABLES:
            try:
                values[name] = int(environ[name])
            except ValueError:
                raise ValueError(f"distributed launch: {name} must be an integer, got {environ[name]!r}") from None
        env = cls(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])
        if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
            raise ValueError(
                f"distributed launch: need 0 <= RANK < WORLD_SIZE and "
                f"LOCAL_RANK >= 0, got RANK={env.rank}, WORLD_SIZE={env.world_size}, "
                f"LOCAL_RANK={env.local_rank}"
            )
        missing = [name for name in RENDEZVOUS_VARIABLES if not environ.get(name)]
        if env.world_size > 1 and missing:
            raise ValueError(
                f"distributed launch: WORLD_SIZE={env.world_size} but "
                f"{' and '.join(missing)} not set; start data-parallel runs with "
                f"torchrun"
            )
        return env

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def check_batch_divisible(batch_size: int, world_size: int) -> None:
    """Raise ``ValueError`` unless the global batch splits evenly over the ranks.

    Equal slices are what make K ranks of ``B/K`` rows equal one process of ``B`` rows: DDP
    averages the ranks' gradients with equal weights.
    """
    if batch_size % world_size:
        raise ValueError(
            f"--batch-size {batch_size} is the global batch and must be divisible "
            f"by the {world_size} data-parallel ranks (WORLD_SIZE)"
        )


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items.

    The shares partition ``range(n)`` and differ in size by at most one; with fewer items than
    ranks some shares are empty.
    """
    return n * rank // world_size, n * (rank + 1) // world_size


class Distributed:
    """The process group of a run as the training loop sees it.

    ``Distributed(device)`` is the single-process stand-in: every collective returns its input.
    ``distributed_session`` builds the real one. CPU collectives (stop votes, generator states)
    go through ``control_group``, a separate gloo group, so that they never wait for a GPU
    stream nor queue behind the gradient all-reduces.
    """

    def __init__(self, device: torch.device, env: DistEnv = DistEnv(), control_group: dist.ProcessGroup | None = None):
        self.device = device
        self.env = env
        self.control_group = control_group

    @property
    def rank(self) -> int:
        """This process's rank, 0 alone."""
        return self.env.rank

    @property
    def world_size(self) -> int:
        """Number of ranks K, 1 alone."""
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes files and prints."""
        return self.env.is_main

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in ``DistributedDataParallel`` (gradient averaging), or as is when alone."""
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``tensor`` (on ``device``) reduced over the ranks in place by ``sum``/``min``/``max``."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op.upper()))
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a CPU tensor of the same shape and dtype, in rank order."""
        if self.world_size == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=self.control_group)
        return parts

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. until rank 0 has finished writing a file)."""
        if self.world_size > 1:
            dist.barrier(group=self.control_group)


class StopVote:
    """Agreement of the ranks on stop flags (SIGINT, time budget) at no waiting cost.

    Each call casts this rank's flags and returns, for each flag, the OR over the ranks of the
    flags cast at the previous call (all False at the first): the all-reduce runs in the
    background during a training step instead of adding a round trip to every step. All ranks
    make the same calls, so all get the same answers and stop at the same step — one step after
    the first rank wanted to. Alone, the answer is the flags just cast.
    """

    def __init__(self, distributed: Distributed):
        self.distributed = distributed
        self.pending: tuple[dist.Work, torch.Tensor] | None = None

    def __call__(self, *flags: bool) -> tuple[bool, ...]:
        if self.distributed.world_size == 1:
            return flags
        answer = (False,) * len(flags)
        if self.pending is not None:
            work, votes = self.pending
            work.wait()
            answer = tuple(bool(vote) for vote in votes)
        votes = torch.tensor([int(flag) for flag in flags], dtype=torch.int64)
        work = dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self.distributed.control_group, async_op=True)
        self.pending = (work, votes)
        return answer

    def settle(self) -> None:
        """Wait for the vote in flight (before the process group may be torn down)."""
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None


@contextlib.contextmanager
def distributed_session(env: DistEnv, device: torch.device) -> Iterator[Distributed]:
    """Join the process group described by ``env`` (``env://``: torchrun's variables), yield the
    ``Distributed`` for ``device``, and leave the group on exit. Alone, no group is formed.

    The backend is nccl for CUDA devices and gloo for the CPU; a second, gloo group carries the
    small CPU messages. Setup failures raise ``DistributedError`` in one line.
    """
    if env.world_size == 1:
        yield Distributed(device, env)
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world_size)
        control_group = dist.new_group(backend="gloo")
    except (RuntimeError, ValueError) as error:
        raise DistributedError(
            f"cannot join the {backend} process group as rank {env.rank} of "
            f"{env.world_size} ({' '.join(str(error).split())[:200]})"
        ) from None
    try:
        yield Distributed(device, env, control_group)
    finally:
        dist.destroy_process_group()


def rank_device(name: str, env: DistEnv) -> torch.device:
    """The device of one data-parallel rank: ``cpu``, or with CUDA the GPU ``cuda:LOCAL_RANK``.

    With one process this is ``resolve_device``. With several, ``auto`` and ``cuda`` mean each
    rank's own GPU; an explicit ``cuda:N`` is refused, because it would put every rank of a
    machine on the same GPU.
    """
    if env.world_size == 1:
        return resolve_device(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        fail(
            "device",
            f"with {env.world_size} data-parallel ranks use cuda (each rank takes "
            f"cuda:LOCAL_RANK) or cpu, not {name!r}",
        )
    return resolve_device(f"cuda:{env.local_rank}")

"""Training on several processes (GPUs, or CPU cores, or machines) with ``torch.distributed``.

Launched by ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` ...);
plain ``python -m lora.runners.real_small`` never touches any of this. What changes from one
process, in torchtune's spirit (the loop stays the loop):

* **Same global batches.** Every rank forms the same micro-batches in the same seeded order as
  one process would; each rank takes its share of every micro-batch's clips (``clips[rank::world]``).
  The loss of a step is the summed token cross-entropy of all its clips divided by the step's
  token count, which every rank knows (the labels are known), so the shares add up to exactly the
  one-process loss, whatever their sizes.
* **One all-reduce where it matters**: after the step's backward passes, the adapter's gradients
  are summed across ranks in one flat buffer; clipping, AdamW and the schedule then run the same
  on every rank, so the adapters stay identical without broadcasting them.
* **Evaluation** deals the (length-sorted) batches round-robin and adds up the loss sums and token
  counts and gathers the transcripts: the numbers are the one-process numbers.
* **Rank 0** does the one-time work first (model import, corpus synthesis) while the others wait at
  a barrier, holds the run folder's lock and is the only writer (artifacts, logs, checkpoints,
  TensorBoard, progress).

Not the ``DistributedDataParallel`` wrapper, on purpose: DDP synchronises gradients inside the
backward of a forward that went through its ``forward``, while our encoder runs the model's
submodules clip by clip (:mod:`lora.model.encoder`), and a micro-batch can leave a rank without clips
(DDP would then wait for a backward that never comes). The adapter is small (2.6 M parameters on
base-en), so one all-reduce per optimizer step costs little; DDP's overlap of communication with
backward would gain little here.

A rank that dies: gloo and NCCL fail the other ranks' next collective (a closed connection) and
``torchrun`` stops the job; a rank that hangs (a machine gone from the network) makes the others
fail after ``--dist-timeout`` seconds (default 600). Either way each rank exits with one line.
SIGTERM to torchrun (a preempted or cancelled job) reaches every rank: the training loop finishes the
step, the ranks agree to stop at the same one, rank 0 saves a checkpoint (:mod:`lora.training.loop`).

Every rank decodes its own data, picks its own checkpoint and builds its own adapter: :meth:`Dist.agree`
compares a hash of each across ranks once at start (the data plan before the first file is written; the
resume step and the adapter once the checkpoint is picked), and a fresh adapter is rank 0's, broadcast.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from lora.errors import LoraError

DEFAULT_TIMEOUT = 600


class PeerLost(LoraError):
    """A collective failed: another rank died, or did not answer within the timeout."""


@contextlib.contextmanager
def _collective(what: str):
    try:
        yield
    except Exception as exc:  # gloo/NCCL report a dead or silent peer as RuntimeError kinds
        raise PeerLost(f"rank {os.environ.get('RANK', '?')}: lost the other ranks during {what} "
                       f"({str(exc).splitlines()[0][:160]}); a peer process died or did not answer within "
                       "--dist-timeout. Rerun the same command, with any number of processes, to resume from the "
                       "last checkpoint") from None


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # nccl on CUDA, gloo elsewhere; None for one process

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def share(self, items: list) -> list:
        """This rank's part of a global micro-batch (every rank sees the same ``items``)."""
        return list(items[self.rank::self.world]) if self.active else list(items)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            with _collective("a barrier"):
                td.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64), the same result on every rank."""
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        with _collective("a sum"):
            td.all_reduce(t)
        return t.tolist()

    def sum_grads(self, params) -> None:
        """Sum the gradients of ``params`` over ranks, in place, in one flat buffer."""
        if not self.active:
            return
        import torch
        import torch.distributed as td
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        with _collective("the gradient all-reduce"):
            td.all_reduce(flat)
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads), strict=True):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)

    def broadcast(self, tensors) -> None:
        """Rank 0's values of ``tensors``, copied in place on every rank (one flat buffer)."""
        if not self.active:
            return
        import torch
        import torch.distributed as td
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        with torch.no_grad():
            flat = _flatten_dense_tensors([t.data for t in tensors])
            with _collective("a broadcast"):
                td.broadcast(flat, 0)
            for t, v in zip(tensors, _unflatten_dense_tensors(flat, tensors), strict=True):
                t.data.copy_(v)

    def agree(self, items: dict, fix: str) -> None:
        """Stop with one line when an item (name -> value, compared by :func:`fingerprint`) differs between ranks."""
        if not self.active:
            return
        every = self.gather({name: fingerprint(v) for name, v in items.items()})
        differ = {name: [str(r) for r, d in enumerate(every) if d[name] != every[0][name]] for name in items}
        bad = [f"{name} (rank{'s' if len(r) > 1 else ''} {', '.join(r)})" for name, r in differ.items() if r]
        if bad:
            raise LoraError(f"the ranks do not agree at start: {'; '.join(bad)} differ from rank 0's; {fix}")

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as td

        out = [None] * self.world
        with _collective("a gather"):
            td.all_gather_object(out, obj)
        return out

    @contextlib.contextmanager
    def main_first(self):
        """The block runs on rank 0 first (one-time work such as an import or a synthesis), then on the others."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def _device(self):
        import torch

        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


SINGLE = Dist()


def fingerprint(value) -> str:
    """A short hash of ``value``: a list item by item, tensors by their values, anything else by its repr."""
    import hashlib

    h = hashlib.sha256()
    for item in value if isinstance(value, list) else [value]:
        h.update(item.detach().float().cpu().numpy().tobytes() if hasattr(item, "detach") else repr(item).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_type: str, timeout_s: float = DEFAULT_TIMEOUT) -> Dist:
    """Join the process group torchrun prepared (nccl on CUDA, gloo elsewhere); SINGLE when not launched so."""
    if not launched_by_torchrun():
        return SINGLE
    from datetime import timedelta

    import torch
    import torch.distributed as td

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not td.is_initialized():
        with _collective("start-up"):
            td.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    _say_why_when_stopped(rank)
    return Dist(rank, world, local, backend)


def _say_why_when_stopped(rank: int) -> None:
    """torchrun stops every rank with SIGTERM when one fails or when it is stopped itself: outside the training steps
    (which stop after the step and save, :mod:`lora.training.loop`) say so in one line, not a traceback."""
    import signal
    import sys

    def stopped(signum, frame):
        print(f"error: rank {rank}: stopped by torchrun (SIGTERM): another rank failed (its error is above) or the job "
              "was stopped; rerun the same command to resume from the last checkpoint", file=sys.stderr, flush=True)
        os._exit(143)

    signal.signal(signal.SIGTERM, stopped)


def shutdown() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()

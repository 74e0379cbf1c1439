"""An exponential moving average of the adapter weights (Polyak averaging), validated and kept in their place.

A small adapter trained for many passes over a few hundred clips ends each step a little off wherever the last batches
pushed it; the average of its recent steps sits nearer the middle of where training went, and on held-out sentences it
is the better model (docs/recorded.md: the personal preset's measurements). With ``--average-steps N`` the loop keeps,
beside the live weights, ``avg <- avg + (live - avg) / N`` after every optimizer step (decay ``1 - 1/N``: the last ``N``
steps weigh about 63%), starting from the untouched adapter; every validation check measures the average, and the best
check's average is what the run keeps. The optimizer goes on with the live weights.

The update is torch's own (:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`). torch's ``AveragedModel`` is not used:
it deep-copies the whole model (64 M parameters of base-en) to average the 2.6 M that train; this averages only the
trainable tensors, and swaps them into the model while it is measured.
"""

from __future__ import annotations

import contextlib

import torch


class WeightAverage:
    """The moving average of ``params`` over about ``steps`` steps; with ``optimizer`` it updates after each of its
    steps (a step post-hook), so the training loop does not call :meth:`update` itself."""

    def __init__(self, params: list[torch.Tensor], steps: int, optimizer: torch.optim.Optimizer | None = None):
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        if steps < 1:
            raise ValueError(f"an average over {steps} steps")
        self.params, self.steps = params, steps
        self.average = [p.detach().clone() for p in params]
        self._update = get_ema_multi_avg_fn(1 - 1 / steps)
        if optimizer is not None:
            optimizer.register_step_post_hook(lambda *_: self.update())

    def update(self) -> None:
        self._update(self.average, [p.detach() for p in self.params], None)

    def reset(self) -> None:
        """Start the average again from the live weights (a fresh run, once every rank holds rank 0's adapter)."""
        _copy(self.average, self.params)

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its live weights again after it."""
        live = [p.detach().clone() for p in self.params]
        _copy(self.params, self.average)
        try:
            yield
        finally:
            _copy(self.params, live)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        if state["steps"] != self.steps or len(state["average"]) != len(self.average):
            from lora.errors import LoraError

            raise LoraError(f"the checkpoint averages the adapter over {state['steps']} steps and "
                            f"{len(state['average'])} tensors, this run over {self.steps} and {len(self.average)}: "
                            "start it again with --force")
        _copy(self.average, state["average"])


@torch.no_grad()
def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    for t, s in zip(targets, sources, strict=True):
        t.copy_(s)

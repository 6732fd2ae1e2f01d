"""Early stopping: patience on a validation score, a wall-clock budget, and the best epoch's weights.

It works on the :class:`~mmsr_model.checkpoint.LoopState` a checkpoint saves, so a
resumed run carries on with the same counters and the same best weights.
"""

from __future__ import annotations

import logging
import math
import time

from torch import nn

from mmsr_model.checkpoint import LoopState

log = logging.getLogger(__name__)


def fresh_state() -> LoopState:
    """The loop state before the first epoch."""
    return LoopState(epoch=0, best_score=-math.inf, bad_epochs=0, best_state=None, history={})


class EarlyStopping:
    """Decides after each epoch whether training goes on, and keeps the best weights on the CPU.

    ``time_budget_s`` counts from ``started`` (this process's start of training): the
    epoch that passes it is the last one.
    """

    def __init__(
        self, state: LoopState, patience: int, time_budget_s: float | None, started: float, metric: str
    ) -> None:
        self.state = state
        self.patience = patience
        self.time_budget_s = time_budget_s
        self.started = started
        self.metric = metric

    @property
    def patience_spent(self) -> bool:
        """Whether ``patience`` epochs in a row brought no gain (also true for a resumed finished run)."""
        return self.state.bad_epochs >= self.patience

    @property
    def budget_spent(self) -> bool:
        return self.time_budget_s is not None and time.perf_counter() - self.started >= self.time_budget_s

    def record(self, epoch: int, score: float, model: nn.Module) -> bool:
        """Count ``epoch`` with validation ``score``; a new best keeps ``model``'s weights. True if best."""
        state = self.state
        improved = score > state.best_score
        if improved:
            state.best_score, state.bad_epochs = score, 0
            state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        return improved

    def stop_reason(self, epoch: int, best_epoch: int) -> str | None:
        """Why training stops after ``epoch`` ("patience" or "budget", logged), or None to go on."""
        if self.patience_spent:
            log.info(
                "early stop after epoch %d: no %s gain for %d epochs",
                epoch,
                self.metric,
                self.state.bad_epochs,
            )
            return "patience"
        if self.budget_spent:
            log.warning(
                "time budget of %.0f s spent after epoch %d; keeping best epoch %d",
                self.time_budget_s,
                epoch,
                best_epoch,
            )
            return "budget"
        return None

    def restore_best(self, model: nn.Module) -> None:
        """Load the best epoch's weights into ``model`` (nothing when no epoch ran)."""
        if self.state.best_state is not None:
            model.load_state_dict(self.state.best_state)

"""Dynamic networks: early exits (``add_exits_``, ``train_exits``, ``calibrate_exits``, ``exit_report``)."""

from .calibrate import calibrate_exits, choose_thresholds, collect_exit_logits
from .config import EarlyExits
from .exits import exit_heads, exit_outputs, exits_disabled, predict_with_exits
from .heads import ExitHeads, confidence, make_head
from .report import exit_report
from .training import exit_objective, train_exits

__all__ = [
    "EarlyExits",
    "ExitHeads",
    "calibrate_exits",
    "choose_thresholds",
    "collect_exit_logits",
    "confidence",
    "exit_heads",
    "exit_objective",
    "exit_outputs",
    "exit_report",
    "exits_disabled",
    "make_head",
    "predict_with_exits",
    "train_exits",
]

"""Training losses in plain PyTorch (no k2): the mutual-information recursion and the RNN-T
losses built on it (full, simple/smoothed, pruned)."""

from zipa.losses.mutual_information import mutual_information_recursion
from zipa.losses.rnnt import (
    do_rnnt_pruning,
    get_rnnt_logprobs,
    get_rnnt_logprobs_joint,
    get_rnnt_logprobs_pruned,
    get_rnnt_logprobs_smoothed,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)

__all__ = [
    "mutual_information_recursion",
    "get_rnnt_logprobs",
    "get_rnnt_logprobs_joint",
    "get_rnnt_logprobs_pruned",
    "get_rnnt_logprobs_smoothed",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
    "rnnt_loss",
    "get_rnnt_prune_ranges",
    "do_rnnt_pruning",
    "rnnt_loss_pruned",
]

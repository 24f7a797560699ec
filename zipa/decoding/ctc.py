"""CTC search."""

from __future__ import annotations

from typing import List, Tuple, Union

import torch
from torch import Tensor

BLANK_ID = 0


def ctc_greedy_search(
    log_probs: Tensor, lengths: Tensor, blank_id: int = BLANK_ID, return_frames: bool = False
) -> Union[List[List[int]], Tuple[List[List[int]], List[List[int]]]]:
    """Best path: argmax per frame, repeats collapsed, blanks dropped.

    log_probs: (batch, T, vocab); lengths: (batch,). With `return_frames`, also returns for
    each token the frame where its run starts.
    """
    best = log_probs.argmax(dim=-1).cpu()
    hyps, frames = [], []
    for row, length in zip(best, lengths.tolist()):
        row = row[:length]
        # A token is emitted where the argmax changes and is not blank.
        starts = torch.ones_like(row, dtype=torch.bool)
        starts[1:] = row[1:] != row[:-1]
        keep = starts & (row != blank_id)
        hyps.append(row[keep].tolist())
        frames.append(torch.nonzero(keep).flatten().tolist())
    return (hyps, frames) if return_frames else hyps

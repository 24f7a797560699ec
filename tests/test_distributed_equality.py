"""Distributed training is the same training: 2 gloo ranks, each given half of every batch,
against 1 process given the whole batches.

Both runs go through the trainer's own per-batch code (`Trainer.train_one_epoch`: schedules,
`compute_loss`, backward, DDP's gradient all-reduce, ScaledAdam + Eden) on the tiny preset,
fed the same fixed batches. This file is also the script that runs them:
`python tests/test_distributed_equality.py OUT WORLD_SIZE PORT` writes each rank's final
weights and first-step gradients to OUT.

What makes the two runs comparable, and what does not need to be made so:
- The loss of a batch is a sum over its utterances, and DDP sums the ranks' gradients
  (`zipa.train.distributed.sum_gradients`): the gradient of a step is the gradient of the whole
  batch. (icefall's DDP averages them: half of it with 2 ranks, which ScaledAdam would ignore
  but for its eps of 1e-8; with this tiny model and batch that moved the weights 5e-4 apart in
  12 steps, against 4e-6 with the sum.) The test checks the gradients of the first step and
  the weights after 12 steps (ScaledAdam's size updates, every 4 steps, and its first clipping
  threshold, at step 10, included).
- Python's `random` decides when Balancer and Whiten act, when the attention scores are
  penalised and some layer skips: every rank and the single process make the same draws in the
  same order from the same seed, so they decide alike. Those decisions stay on.
- torch's generator draws in the shape of the batch (dropout masks, sequence skips, the encoder's
  feature masks): half batches cannot draw what the whole batch draws. They are switched off
  here, and the workers check that training drew nothing from torch's generator.
- Some regularisers act on each rank's gradient before DDP adds them up, and not linearly:
  Balancer and Whiten from the statistics of the batch a rank sees, `limit_param_value`
  (bypass scales, BiasNorm) by flipping the sign of gradient elements by their sign on that
  rank. The sum of the ranks' corrections is not the correction of the sum, in icefall as here,
  so they are switched off (their limits opened) too.
- The halves keep the whole batch's padded length: a batch's padding reaches its valid frames
  through the convolutional front end (see the README), which is a property of batching, not
  of distribution.
"""

import math
import sys
from functools import partial
from pathlib import Path
from typing import Optional

import torch

STEPS = 12
BATCH = 4  # utterances per whole batch: 2 per rank
MAX_DURATION = 4.0  # of the whole batch; each rank gets MAX_DURATION / world_size


def fixed_batches():
    """STEPS batches of random features and labels, utterances of different lengths."""
    from lhotse.utils import LOG_EPSILON

    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(STEPS):
        num_frames = torch.randint(100, 161, (BATCH,), generator=generator)
        inputs = torch.randn(BATCH, int(num_frames.max()), 80, generator=generator)
        for i, n in enumerate(num_frames.tolist()):
            inputs[i, n:] = LOG_EPSILON  # padding as the data module's collation writes it
        token_ids = [torch.randint(3, 127, (int(torch.randint(4, 12, (), generator=generator)),),
                                   generator=generator).tolist() for _ in range(BATCH)]
        batches.append({"inputs": inputs, "supervisions": {"num_frames": num_frames, "token_ids": token_ids}})
    return batches


def half(batch, rank: int, world_size: int):
    """Rank `rank`'s share of `batch`: its utterances, padded to the whole batch's length."""
    share = BATCH // world_size
    rows = slice(rank * share, (rank + 1) * share)
    sup = batch["supervisions"]
    return {"inputs": batch["inputs"][rows],
            "supervisions": {"num_frames": sup["num_frames"][rows], "token_ids": sup["token_ids"][rows]}}


# Rates of what draws from torch's generator in the shape of the batch: dropout, layer and
# sequence skips.
TORCH_RANDOM_RATES = ("p", "dropout_p", "dropout", "skip_rate", "straight_through_rate", "attention_skip_rate",
                      "conv_skip_rate", "ff2_skip_rate", "ff3_skip_rate", "layerdrop_rate")


def _set(module: torch.nn.Module, name: str, value: float) -> None:
    """Make `module.<name>`, where it is a number or a ScheduledFloat, the constant `value`."""
    from zipa.model.scaling import ScheduledFloat

    old = getattr(module, name, None)
    if isinstance(old, ScheduledFloat):
        setattr(module, name, ScheduledFloat((0.0, value), default=value))
    elif isinstance(old, (int, float)) and not isinstance(old, bool):
        setattr(module, name, value)


def without_batch_shaped_randomness(model: torch.nn.Module) -> None:
    """Switch off what draws from torch's generator in the batch's shape, and the regularisers
    that correct each rank's gradient on its own, not linearly (see the module docstring)."""
    from zipa.model.scaling import Balancer, Whiten
    from zipa.model.zipformer import Zipformer2

    for module in model.modules():
        for name in TORCH_RANDOM_RATES:
            _set(module, name, 0.0)
        if isinstance(module, Balancer):
            _set(module, "prob", 0.0)
        if isinstance(module, Whiten):
            _set(module, "grad_scale", 0.0)
        for name in ("scale_min", "log_scale_min"):  # limit_param_value's bounds
            _set(module, name, -math.inf)
        for name in ("scale_max", "log_scale_max"):
            _set(module, name, math.inf)
        if isinstance(module, Zipformer2):  # its feature masks, as in eval mode
            module._feature_masks = lambda x, n=len(module.encoder_dim): [1.0] * n


def train_rank(out: Path, world_size: int, dist_info) -> None:
    """One rank's run: the tiny CTC model trained on its share of the fixed batches."""
    from zipa.data.module import AsrDataModule
    from zipa.model.zipformer import RelPositionMultiheadAttentionWeights
    from zipa.train.loop import Trainer
    from zipa.train.recipe import training_parser

    torch.set_num_threads(1)
    rank = dist_info.rank
    parser = training_parser("test", AsrDataModule, dict(use_ctc=True, use_transducer=False), dict(use_cr_ctc=False))
    args = parser.parse_args([
        "--preset", "tiny", "--exp-dir", str(out / f"exp-{world_size}"), "--device", "cpu", "--seed", "7",
        "--tensorboard", "False", "--log-interval", "1000", "--save-every-n", "1000",
        # The same seconds of audio per step, so the model's schedules see the same batch count.
        "--max-duration", str(MAX_DURATION / world_size), "--ref-duration", "0.5",
    ])
    trainer = Trainer(args, dist_info, None, output_downsampling_factor=1)
    without_batch_shaped_randomness(trainer.raw_model)
    first_grads = {}

    def keep_first_gradients(optimizer, *_):
        if not first_grads:
            named = trainer.raw_model.named_parameters()
            first_grads.update({n: p.grad.clone() for n, p in named if p.grad is not None})

    trainer.optimizer.register_step_pre_hook(keep_first_gradients)
    initial = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    generator_before = torch.get_rng_state()
    trainer.train_one_epoch([half(b, rank, world_size) for b in fixed_batches()], None, None, math.inf)
    assert torch.equal(torch.get_rng_state(), generator_before), "training drew from torch's generator"
    assert trainer.batch_idx_train == STEPS
    attention = [(name, m) for name, m in trainer.raw_model.named_modules()
                 if isinstance(m, RelPositionMultiheadAttentionWeights)]
    key_biases = {f"{name}.in_proj.bias": (m.num_heads * m.query_head_dim, 2 * m.num_heads * m.query_head_dim)
                  for name, m in attention}
    torch.save({"weights": trainer.raw_model.state_dict(), "grads": first_grads, "initial": initial,
                "key_biases": key_biases}, out / f"world{world_size}-rank{rank}.pt")


# --------------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------------


def _relative_difference(a: dict, b: dict, leave_out: Optional[dict] = None) -> float:
    """|a - b| / |a| over all floating-point entries together (float64 sums), without the
    element ranges of `leave_out` ({name: (start, stop)})."""
    difference = total = 0.0
    for key, value in a.items():
        if value.is_floating_point():
            x, y = value.double().flatten().clone(), b[key].double().flatten().clone()
            if leave_out and key in leave_out:
                x[slice(*leave_out[key])] = y[slice(*leave_out[key])] = 0.0
            difference += float(((x - y) ** 2).sum())
            total += float((x**2).sum())
    return (difference / total) ** 0.5


def test_two_ranks_on_half_batches_train_as_one_process_on_whole_batches(tmp_path):
    from training_utils import free_port, run_to_end

    for world_size in (1, 2):
        run_to_end([sys.executable, __file__, str(tmp_path), str(world_size), str(free_port())], timeout=300)
    one = torch.load(tmp_path / "world1-rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"world2-rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), f"the ranks differ in {key}"

    # The first step: the gradient DDP hands the optimiser is the whole batches' gradient.
    grads_one, grads_two = one["grads"], ranks[0]["grads"]
    assert grads_one.keys() == grads_two.keys() and len(grads_one) > 100
    grad_difference = _relative_difference(grads_one, grads_two)

    # After STEPS steps the weights agree to float rounding, far closer than they moved. Left
    # out: the attention key biases, whose exact gradient is 0 (softmax ignores a shift common
    # to all keys): their float gradient is rounding noise, which ScaledAdam, like Adam,
    # normalises into full-size steps, so any two runs that round differently move them apart.
    weights_one, weights_two = one["weights"], ranks[0]["weights"]
    difference = _relative_difference(weights_one, weights_two, one["key_biases"])
    with_key_biases = _relative_difference(weights_one, weights_two)
    moved = _relative_difference(weights_one, one["initial"])
    print(f"\nfirst gradients: {grad_difference:.1e}; weights after {STEPS} steps: {difference:.1e} "
          f"({with_key_biases:.1e} with the key biases); moved from the start: {moved:.1e}")
    # Measured here: 1.4e-7 and 3.8e-6 (5e-7 and 4.8e-6 with 2 threads per process); averaged
    # gradients instead of summed: 0.5 and 5.5e-4.
    assert grad_difference < 1e-5 and difference < 2e-5 and moved > 1e-2, (grad_difference, difference, moved)


if __name__ == "__main__":
    from zipa.train.distributed import run_distributed

    out_dir, size, port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    run_distributed(partial(train_rank, out_dir, size), size, master_port=port)

"""ScaledAdam optimiser and Eden learning-rate schedule (icefall-compatible).

ZIPA trains its Zipformer with icefall's optimiser pair; this module re-implements both from
the algorithm, with the same hyper-parameter names, defaults, formulas and state layout, so that
an icefall ``optimizer``/``scheduler`` checkpoint entry loads here and vice versa.

ScaledAdam in one paragraph
---------------------------
Zipformer's modules are (nearly) invariant to the overall scale of each weight matrix, so what
matters is the *relative* change of a tensor per step.  ScaledAdam therefore

* normalises the gradient elementwise as Adam does (second moment ``exp_avg_sq``, decay
  ``beta2``, bias-corrected only while the correction is large);
* multiplies the step by the tensor's root-mean-square value ``param_rms`` (clamped below by
  ``param_min_rms``), so every tensor moves by about ``lr`` of its own size;
* learns each tensor's overall scale separately, as if ``p = p_unit * exp(s)``: every
  ``size_update_period`` steps it takes an Adam-like step on ``s`` with learning rate
  ``lr * scalar_lr_scale``; the scale of a tensor whose rms is below ``param_min_rms`` is left
  alone (so tiny tensors are not shrunk further), and no scale step takes a tensor's rms past
  ``param_max_rms``;
* treats one-element tensors (learned scalars) with plain Adam at ``lr * scalar_lr_scale``
  and clamps them to ``[-scalar_max, scalar_max]``;
* applies momentum to the *parameter change* (``delta``, decay ``beta1``) rather than to the
  gradient, so the scale step and the main step share one momentum.  There is no first-moment
  bias correction: the slow start acts as extra warm-up;
* optionally clips: the whole group's gradient norm, measured in the same rms-scaled units as
  the update, is limited to ``clipping_scale`` times the median norm of the last
  ``clipping_update_period`` steps (re-estimated every period, and early at steps 10, 20 and 40
  with a doubled threshold because norms move fast at the start).

Parameters of the same shape and dtype are stacked and updated together (fewer, larger kernels
on a GPU).  The stacking also fixes where the state lives (with the first parameter of each
shape), which is what makes checkpoints interchangeable with icefall's.

Eden
----
``lr = base_lr * ((b² + B²)/B²)^-0.25 * ((e² + E²)/E²)^-0.25 * warmup(b)`` with ``b`` the batch
index, ``e`` the epoch, ``B = lr_batches``, ``E = lr_epochs`` and a warm-up factor rising
linearly from ``warmup_start`` to 1 over ``warmup_batches`` batches.  ZIPA's ``train.py`` calls
``scheduler.step_batch(params.batch_idx_train)`` with the *raw* batch index and
``scheduler.step_epoch(epoch - 1)`` at the start of each epoch.  ``--ref-duration`` does not
enter Eden: it rescales the batch count that the model's internal schedules see
(``set_batch_count``), see :func:`adjusted_batch_count`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = [
    "ScaledAdam",
    "LRScheduler",
    "Eden",
    "get_parameter_groups_with_lrs",
    "adjusted_batch_count",
]

# Steps (besides multiples of clipping_update_period) at which the clipping threshold is
# (re-)estimated from the norms seen so far.
_EARLY_THRESHOLD_STEPS = (10, 20, 40)


# --------------------------------------------------------------------------------------------
# Helpers used by the training script
# --------------------------------------------------------------------------------------------


def adjusted_batch_count(batch_idx_train: int, max_duration: float, world_size: int, ref_duration: float) -> float:
    """The number of batches trained so far, counted in batches of ``ref_duration`` seconds.

    The model's internal schedules (dropout, balancer probabilities, bypass scales, ...) are
    written in terms of a batch count for a reference batch size.  With a larger ``--max-duration``
    or more GPUs each step sees more audio, so the schedules should advance faster:
    ``batch_idx_train * (max_duration * world_size) / ref_duration``.  ZIPA passes this to
    ``set_batch_count(model, ...)``; the Eden scheduler is stepped with the raw batch index.
    """
    return batch_idx_train * (max_duration * world_size) / ref_duration


def get_parameter_groups_with_lrs(
    model: nn.Module,
    lr: float,
    include_names: bool = False,
    freeze_modules: Sequence[str] = (),
) -> list[dict]:
    """Group ``model``'s parameters by learning rate, honouring per-module ``lr_scale``.

    Any submodule may carry a float attribute ``lr_scale``; a parameter's learning rate is ``lr``
    times the product of the ``lr_scale`` of every module on its dotted path (the root module
    included).  Parameters whose top-level module (after an optional DDP ``module.`` prefix) is
    in ``freeze_modules`` are left out.

    Returns ``[{"params": [...], "lr": x}, ...]``, or with ``include_names=True``
    ``[{"named_params": [(name, param), ...], "lr": x}, ...]``, which :class:`ScaledAdam` accepts
    and uses to name the parameter that dominates an exploding gradient.
    """
    scale_of: dict[str, float] = defaultdict(lambda: 1.0)
    for name, module in model.named_modules():
        if hasattr(module, "lr_scale"):
            scale_of[name] = module.lr_scale

    by_lr: dict[float, list] = defaultdict(list)
    for name, param in model.named_parameters():
        parts = name.split(".")
        top = parts[1] if parts[0] == "module" and len(parts) > 1 else parts[0]
        if top in freeze_modules:
            logging.info(f"Remove {name} from parameters")
            continue
        prefix = parts[0]
        cur_lr = lr * scale_of[prefix]
        if prefix != "":
            cur_lr *= scale_of[""]  # the root module's own lr_scale
        for part in parts[1:]:
            prefix = f"{prefix}.{part}"
            cur_lr *= scale_of[prefix]
        by_lr[cur_lr].append((name, param) if include_names else param)

    key = "named_params" if include_names else "params"
    return [{key: members, "lr": group_lr} for group_lr, members in by_lr.items()]


# --------------------------------------------------------------------------------------------
# ScaledAdam
# --------------------------------------------------------------------------------------------


class _Stack(NamedTuple):
    """Same-shape parameters stacked on a new dim 0, with their stacked gradients."""

    param: Tensor  # (n, *shape); a copy, written back after the update
    grad: Tensor  # (n, *shape); a copy, so clipping never touches the real .grad
    state: dict  # optimiser state, kept with the first parameter of the stack
    names: list[str]


class ScaledAdam(Optimizer):
    """Adam with updates proportional to each tensor's rms and a learned per-tensor scale.

    Args:
      params: parameters, ``(name, parameter)`` pairs (e.g. ``model.named_parameters()``), or a
        list of group dicts with ``"params"`` or ``"named_params"`` (as returned by
        :func:`get_parameter_groups_with_lrs`) plus per-group options.  Names are only used in
        diagnostics.
      lr: learning rate; ScaledAdam's is large (0.03-0.05) because steps are relative.
      clipping_scale: if set (ZIPA: 2.0), clip the group's rms-scaled gradient norm to this
        many times the recent median norm.
      betas: ``(beta1, beta2)``: momentum on the parameter change, and decay of the mean
        squared gradient.
      scalar_lr_scale: learning-rate factor for one-element tensors and for the scale of the
        others.
      eps: added to the Adam denominators.
      param_min_rms: floor on ``param_rms`` in the update; below it a tensor's scale is frozen.
      param_max_rms: the learned scale never takes a tensor's rms above this.
      scalar_max: one-element parameters are clamped to ``[-scalar_max, scalar_max]``.
      size_update_period: the scale is updated once per this many steps (from the gradients
        of all of them).
      clipping_update_period: number of recent gradient norms the clipping median is taken over,
        and how often the threshold is re-estimated.

    After each :meth:`step`, :meth:`clipping_info` reports the last gradient norm, the factor
    it was scaled by and how many steps have been clipped, for the trainer to log.
    """

    def __init__(
        self,
        params,
        lr=3e-02,
        clipping_scale=None,
        betas=(0.9, 0.98),
        scalar_lr_scale=0.1,
        eps=1.0e-08,
        param_min_rms=1.0e-05,
        param_max_rms=3.0,
        scalar_max=10.0,
        size_update_period=4,
        clipping_update_period=100,
    ):
        if not 0.0 < betas[0] <= betas[1] < 1.0:
            raise ValueError(f"ScaledAdam needs 0 < beta1 <= beta2 < 1, got betas={betas}")
        defaults = dict(
            lr=lr,
            clipping_scale=clipping_scale,
            betas=betas,
            scalar_lr_scale=scalar_lr_scale,
            eps=eps,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
            clipping_update_period=clipping_update_period,
        )
        # Names per group, parallel to param_groups; filled by add_param_group, which
        # Optimizer.__init__ calls once per group.
        self.parameters_names: list[list[str]] = []
        # Whether real names were given; without them there is nothing useful to report about
        # which parameter dominates an exploding gradient.
        self.show_dominant_parameters = True
        super().__init__(params, defaults)
        # Diagnostics for the trainer (not part of the state dict: they change no numbers).
        self.num_clipped_steps = 0  # steps on which some group's gradient was scaled down
        self._last_grad_norm: Tensor | None = None
        self._last_clipping_factor = 1.0
        self._last_threshold: float | None = None

    def add_param_group(self, param_group: dict) -> None:
        """Add a group given by ``"params"`` (tensors or ``(name, tensor)`` pairs) or
        ``"named_params"``; names are kept in :attr:`parameters_names`, not in the group, so
        the state dict has the same layout as icefall's.  The caller's dict is not modified."""
        group = dict(param_group)
        if "named_params" in group:
            members = list(group.pop("named_params"))
        else:
            members = group["params"]
            members = [members] if isinstance(members, Tensor) else list(members)
        tensors, names = [], []
        for i, m in enumerate(members):
            if isinstance(m, tuple):
                name, m = m
            else:
                name = f"param{i}"
                self.show_dominant_parameters = False
            tensors.append(m)
            names.append(name)
        group["params"] = tensors
        super().add_param_group(group)
        self.parameters_names.append(names)

    # ---- stacking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _stacked(self, params: list[Tensor], names: list[str]) -> Iterator[list[_Stack]]:
        """Yield the group's parameters stacked by (dtype, shape), then write them back.

        Stacks come in sorted order of their ``(dtype, *shape)`` key so that the order (which
        fixes the summation order of the clipping norm) does not depend on the model's
        parameter order.  Missing gradients count as zero.
        """
        by_key: dict[tuple, list[tuple[Tensor, str]]] = defaultdict(list)
        for p, name in zip(params, names):
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError("ScaledAdam optimizer does not support sparse gradients")
            key = (str(p.dtype), *p.shape)
            by_key[key].append((p, name))

        members = [by_key[key] for key in sorted(by_key)]
        stacks = []
        for group in members:
            ps = [p for p, _ in group]
            stacks.append(
                _Stack(
                    param=torch.stack(ps),
                    grad=torch.stack([torch.zeros_like(p) if p.grad is None else p.grad for p in ps]),
                    state=self.state[ps[0]],
                    names=[n for _, n in group],
                )
            )
        yield stacks
        for stack, group in zip(stacks, members):
            for i, (p, _) in enumerate(group):
                p.copy_(stack.param[i])

    # ---- the step ---------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """Update all parameters from their ``.grad`` (left unmodified); returns closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        norms, factor, threshold = [], 1.0, None
        for group, names in zip(self.param_groups, self.parameters_names):
            if not group["params"]:
                continue
            with self._stacked(group["params"], names) as stacks:
                if stacks[0].state:
                    group_factor, norm = self._clipping_factor(group, stacks)
                else:  # very first step: nothing to compare the norm with yet
                    group_factor, norm = 1.0, None
                if norm is not None:
                    norms.append(norm)
                    threshold = stacks[0].state.get("model_norm_threshold", threshold)
                factor = min(factor, group_factor)
                for stack in stacks:
                    if not stack.state:
                        self._init_state(group, stack.param, stack.state)
                    self._update(group, stack, group_factor)

        if factor < 1.0:
            self.num_clipped_steps += 1
        self._last_clipping_factor = factor
        self._last_threshold = threshold
        self._last_grad_norm = torch.stack(norms).square().sum().sqrt() if norms else None
        return loss

    def clipping_info(self) -> dict:
        """Gradient-clipping diagnostics of the last :meth:`step`, for logging.

        ``grad_norm``: the rms-scaled gradient norm over all groups (``None`` before the second
        step or without ``clipping_scale``: it is only measured for clipping);
        ``clipping_factor``: the smallest factor any group's gradient was multiplied by (1.0:
        not clipped); ``threshold``: the current norm threshold (``None`` until estimated; with
        several groups, the last group's);
        ``num_clipped``: steps clipped since this optimiser was built.
        """
        norm = self._last_grad_norm
        return {
            "grad_norm": None if norm is None else norm.item(),
            "clipping_factor": self._last_clipping_factor,
            "threshold": self._last_threshold,
            "num_clipped": self.num_clipped_steps,
        }

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        """Create the state of a stack ``p`` (dim 0 indexes the stacked parameters)."""
        state["step"] = 0
        # Momentum is kept on the parameter change itself, combining the scale and main steps.
        state["delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if p.numel() // p.shape[0] > 1:
            dims = list(range(1, p.ndim))
            param_rms = (p**2).mean(dim=dims, keepdim=True).sqrt()  # (n, 1, ..., 1)
            state["param_rms"] = param_rms  # refreshed every size_update_period steps
            state["scale_exp_avg_sq"] = torch.zeros_like(param_rms)
            state["scale_grads"] = torch.zeros(
                group["size_update_period"], *param_rms.shape, device=p.device, dtype=p.dtype
            )
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _clipping_factor(self, group: dict, stacks: list[_Stack]) -> tuple[float, Tensor | None]:
        """Return (factor <= 1 to multiply this group's gradients by, measured norm or None).

        The norm is taken in update units: each tensor's gradient times its ``param_rms``
        (scalars: times ``scalar_lr_scale``), since that is how much the gradient moves it.
        The recent norms live in the first stack's state (``model_norms``), together with the
        threshold and the count of clipped steps since the last estimate.
        """
        clipping_scale = group["clipping_scale"]
        first = stacks[0].state
        step = first["step"]
        if clipping_scale is None or step == 0:
            return 1.0, None
        period = group["clipping_update_period"]
        scalar_lr_scale = group["scalar_lr_scale"]

        device = stacks[0].param.device
        tot_sumsq = torch.tensor(0.0, device=device)
        for stack in stacks:
            if stack.param.numel() == stack.param.shape[0]:  # one-element parameters
                tot_sumsq += (stack.grad**2).sum() * (scalar_lr_scale**2)
            else:
                tot_sumsq += ((stack.grad * stack.state["param_rms"]) ** 2).sum()
        tot_norm = tot_sumsq.sqrt()

        if "model_norms" not in first:
            first["model_norms"] = torch.zeros(period, device=device)
        first["model_norms"][step % period] = tot_norm

        early_steps = [s for s in _EARLY_THRESHOLD_STEPS if s < period]
        if step % period == 0 or step in early_steps:
            self._estimate_threshold(first, step, clipping_scale, early=step in early_steps)

        threshold = first.get("model_norm_threshold")
        if threshold is None:
            return 1.0, tot_norm

        factor = min(1.0, (threshold / (tot_norm + 1.0e-20)).item())
        if factor != factor:  # nan: the norm itself is not finite
            factor = 0.0
        if factor < 1.0:
            first["num_clipped"] += 1
        if factor < 0.1:
            logging.warning(f"Scaling gradients by {factor}, model_norm_threshold={threshold}")
            if self.show_dominant_parameters:
                self._log_dominant_parameter(stacks, tot_sumsq, scalar_lr_scale)
        if factor == 0.0:
            for stack in stacks:
                stack.grad.zero_()  # so that inf * 0 does not turn into nan
        return factor, tot_norm

    @staticmethod
    def _estimate_threshold(state: dict, step: int, clipping_scale: float, early: bool) -> None:
        """Set ``model_norm_threshold`` to ``clipping_scale`` x the median recent norm; log."""
        norms = state["model_norms"].sort()[0].to("cpu")
        if early:  # only the last `step` slots have been filled (step 0 records nothing)
            norms = norms[-step:]
        n = norms.numel()
        quartiles = [norms[min(n - 1, (n // 4) * k)].item() for k in range(5)]
        median = quartiles[2]
        if median - median != 0:
            raise RuntimeError("Too many grads were not finite")
        threshold = clipping_scale * median
        if early:
            threshold = threshold * 2.0  # norms change quickly at the start; be lenient
        state["model_norm_threshold"] = threshold
        percent_clipped = state["num_clipped"] * 100.0 / n if "num_clipped" in state else 0.0
        state["num_clipped"] = 0
        quartile_text = " ".join(f"{q:.3e}" for q in quartiles)
        logging.warning(
            f"Clipping_scale={clipping_scale}, grad-norm quartiles {quartile_text}, "
            f"threshold={threshold:.3e}, percent-clipped={percent_clipped:.1f}"
        )

    @staticmethod
    def _log_dominant_parameter(stacks: list[_Stack], tot_sumsq: Tensor, scalar_lr_scale: float):
        """Log the parameter contributing most to an exploding (rms-scaled) gradient norm."""
        best = None
        for stack in stacks:
            p, grad = stack.param, stack.grad
            if p.numel() == p.shape[0]:
                rms = torch.full(p.shape, scalar_lr_scale, device=grad.device)
            else:
                rms = stack.state["param_rms"]
            sumsq = (grad * rms) ** 2
            if grad.ndim > 1:
                sumsq = sumsq.sum(dim=list(range(1, grad.ndim)))
            for name, s, r, g in zip(stack.names, sumsq, rms, grad):
                proportion = (s / tot_sumsq).item()
                if best is None or proportion > best[0]:
                    best = (proportion, name, s, r, g)
        assert best is not None  # a non-empty stack
        proportion, name, s, r, g = best
        logging.warning(
            f"Parameter dominating tot_sumsq {name} with proportion {proportion:.2f}, "
            f"where dominant_sumsq=(grad_sumsq*orig_rms_sq)={s.item():.3e}, "
            f"grad_sumsq={(g**2).sum().item():.3e}, orig_rms_sq={(r**2).reshape(-1)[0].item():.3e}"
        )

    def _update(self, group: dict, stack: _Stack, clipping_factor: float) -> None:
        """One optimiser step for one stack of same-shape parameters."""
        p, grad, state = stack.param, stack.grad, stack.state
        if clipping_factor != 1.0:
            grad.mul_(clipping_factor)
        step = state["step"]
        period = group["size_update_period"]
        beta1 = group["betas"][0]

        state["delta"].mul_(beta1)
        if p.numel() // p.shape[0] > 1:
            # Gradient w.r.t. the log-scale s of p = p_unit * exp(s) is sum(p * grad).
            dims = list(range(1, p.ndim))
            state["scale_grads"][step % period] = (p * grad).sum(dim=dims, keepdim=True)
            if step % period == period - 1:
                state["param_rms"].copy_((p**2).mean(dim=dims, keepdim=True).sqrt())
                if step > 0:
                    self._update_scale(group, p, state)
            self._update_tensor(group, p, grad, state)
        else:
            self._update_scalar(group, p, grad, state)
        state["step"] = step + 1

    @staticmethod
    def _update_scale(group: dict, p: Tensor, state: dict) -> None:
        """Adam-like step on each tensor's log-scale, from the last ``size_update_period`` grads.

        Added to ``delta`` as ``(1 - beta1) * p * scale_step``, i.e. a relative size change.
        """
        beta1, beta2 = group["betas"]
        size_lr = group["lr"] * group["scalar_lr_scale"]
        eps = group["eps"]
        param_rms = state["param_rms"]
        scale_grads = state["scale_grads"]  # (size_update_period, n, 1, ..., 1)
        period = scale_grads.shape[0]

        # One scale step per `period` steps: decay the second moment per scale step.
        beta2_corr = beta2**period
        scale_exp_avg_sq = state["scale_exp_avg_sq"]
        scale_exp_avg_sq.mul_(beta2_corr).add_((scale_grads**2).mean(dim=0), alpha=1 - beta2_corr)

        size_step = (state["step"] + 1) // period  # 1 on the first scale update
        bias_correction2 = 1 - beta2_corr**size_step
        denom = scale_exp_avg_sq.sqrt() + eps
        scale_step = -size_lr * (bias_correction2**0.5) * scale_grads.sum(dim=0) / denom

        # Leave the scale of a tiny tensor alone (so it is not shrunk further; note that this
        # blocks growth through the scale too), and never grow a tensor past param_max_rms.
        scale_step.masked_fill_(param_rms < group["param_min_rms"], 0.0)
        scale_step = torch.minimum(scale_step, (group["param_max_rms"] - param_rms) / param_rms)
        state["delta"].add_(p * scale_step, alpha=(1 - beta1))

    @staticmethod
    def _update_tensor(group: dict, p: Tensor, grad: Tensor, state: dict) -> None:
        """Main step for tensors of 2+ elements: Adam-normalised gradient times ``param_rms``."""
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=(1 - beta2))

        # Bias-correct the second moment only while the correction is sizeable (< ~230 steps
        # for beta2 = 0.98). `zero_step` (absent unless set externally) restarts the count.
        this_step = state["step"] - state.get("zero_step", 0)
        bias_correction2 = 1 - beta2 ** (this_step + 1)
        if bias_correction2 < 0.99:
            exp_avg_sq = exp_avg_sq * (1.0 / bias_correction2)  # not in place

        denom = exp_avg_sq.sqrt()
        denom += group["eps"]
        normalised = grad / denom
        alpha = -lr * (1 - beta1) * state["param_rms"].clamp(min=group["param_min_rms"])
        delta = state["delta"]
        delta.add_(normalised * alpha)
        p.add_(delta)

    @staticmethod
    def _update_scalar(group: dict, p: Tensor, grad: Tensor, state: dict) -> None:
        """Step for one-element tensors: plain Adam (no rms scaling), clamped to scalar_max."""
        beta1, beta2 = group["betas"]
        lr = group["lr"] * group["scalar_lr_scale"]
        scalar_max = group["scalar_max"]
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        bias_correction2 = 1 - beta2 ** (state["step"] + 1)
        denom = (exp_avg_sq / bias_correction2).sqrt() + group["eps"]
        delta = state["delta"]
        delta.add_(grad / denom, alpha=-lr * (1 - beta1))
        p.clamp_(min=-scalar_max, max=scalar_max)  # clamped before, as icefall does
        p.add_(delta)


# --------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------


class LRScheduler:
    """Base for schedules that depend on both the batch index and the epoch.

    Each parameter group's ``base_lr`` (its ``lr`` when the scheduler is created) is multiplied
    by the factor that :meth:`get_lr` computes.  Call :meth:`step_batch` every batch and
    :meth:`step_epoch` every epoch, in any order; pass the index to set it rather than
    increment it (ZIPA passes the global batch index and ``epoch - 1`` at an epoch's start).
    """

    def __init__(self, optimizer: Optimizer, verbose: bool = False):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        self.verbose = verbose
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.base_lrs = [group["base_lr"] for group in optimizer.param_groups]
        self.epoch = 0
        self.batch = 0

    def state_dict(self) -> dict:
        """What resumption needs: the base learning rates and the current batch and epoch."""
        return {"base_lrs": self.base_lrs, "epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`; learning rates are set at the next step_* call."""
        self.__dict__.update(state_dict)

    def get_last_lr(self) -> list[float]:
        """The learning rates last set (the groups' current ones before any step_* call)."""
        last = getattr(self, "_last_lr", None)
        return list(last) if last is not None else [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        """Learning rates for ``self.batch``/``self.epoch``, one per group; for subclasses."""
        raise NotImplementedError

    def step_batch(self, batch: int | None = None) -> None:
        """Set the batch index (counted from the start of training), or advance it by one."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def step_epoch(self, epoch: int | None = None) -> None:
        """Set the epoch (call at the epoch's start), or advance it by one (at its end)."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._set_lrs()

    def _set_lrs(self) -> None:
        values = self.get_lr()
        assert len(values) == len(self.optimizer.param_groups)
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, values)):
            group["lr"] = lr
            if self.verbose:
                logging.warning(
                    f"Epoch={self.epoch}, batch={self.batch}: adjusting learning rate of group {i} to {lr:.4e}."
                )
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class Eden(LRScheduler):
    """icefall's Eden schedule: slow power-law decay in both batches and epochs, plus warm-up.

    ``lr = base_lr * ((batch² + lr_batches²) / lr_batches²) ** -0.25
                   * ((epoch² + lr_epochs²) / lr_epochs²) ** -0.25 * warmup``, where ``warmup``
    rises linearly from ``warmup_start`` at batch 0 to 1 at ``warmup_batches`` and stays 1.

    The learning rate is roughly flat until ``lr_batches`` batches / ``lr_epochs`` epochs and
    then decays as ``batch^-0.5 * epoch^-0.5``.  ZIPA: ``--base-lr 0.045``, ``--lr-batches``,
    ``--lr-epochs`` (defaults 7500 and 3.5).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_batches: int | float,
        lr_epochs: int | float,
        warmup_batches: int | float = 500.0,
        warmup_start: float = 0.5,
        verbose: bool = False,
    ):
        super().__init__(optimizer, verbose)
        if not 0.0 <= warmup_start <= 1.0:
            raise ValueError(f"warmup_start must be in [0, 1], got {warmup_start}")
        self.lr_batches = lr_batches
        self.lr_epochs = lr_epochs
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start

    def get_lr(self) -> list[float]:
        factor = ((self.batch**2 + self.lr_batches**2) / self.lr_batches**2) ** -0.25 * (
            ((self.epoch**2 + self.lr_epochs**2) / self.lr_epochs**2) ** -0.25
        )
        if self.batch >= self.warmup_batches:
            warmup = 1.0
        else:
            warmup = self.warmup_start + (1.0 - self.warmup_start) * (self.batch / self.warmup_batches)
        return [base_lr * factor * warmup for base_lr in self.base_lrs]

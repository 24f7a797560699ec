"""The training loop both recipes run (CR-CTC, CTC, transducer, attention decoder).

One call per rank: `train(args, dist_info, data_module_class)`. What it does per batch is
ZIPA's: losses from `AsrModel.forward`, ScaledAdam + Eden, optional AMP, gradient
accumulation, `model_avg` on rank 0, checkpoints every `--save-every-n` batches. Checkpoints
hold every piece of state (weights, optimiser, scheduler, grad scaler, the positions of the
supervised and the pseudo-labelled samplers, each rank's RNG), so a run resumed from
`checkpoint-N.pt` or `epoch-N.pt` continues exactly as if never stopped. Under DDP the ranks'
gradients are summed (`zipa.train.distributed.sum_gradients`), so N ranks train as one process
given their N batches together.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from zipa.data.protocols import DataModule
from zipa.model.asr_model import AsrModel, build_model
from zipa.model.scaling import Whiten, set_batch_count
from zipa.model.spec_augment import SpecAugment
from zipa.text.tokenizer import Tokenizer, default_bpe_model_path
from zipa.train.args import model_config_from_args
from zipa.train.checkpoints import (
    AveragedModel,
    load_training_checkpoint,
    remove_old_checkpoints,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
    unwrap,
)
from zipa.train.diagnostics import DIAGNOSTIC_BATCHES, Diagnostics
from zipa.train.distributed import DistInfo, all_reduce_sum, dump_rank_params, gather_objects, sum_gradients
from zipa.train.finetune import FINETUNE_BATCH_COUNT_OFFSET, FinetuneInit, freeze, frozen_prefixes, trainable_groups
from zipa.train.logs import TrainLogger
from zipa.train.objective import describe, objective_of, save_config
from zipa.train.optim import Eden, ScaledAdam, adjusted_batch_count, get_parameter_groups_with_lrs
from zipa.utils.flags import UsageError

if TYPE_CHECKING:
    from zipa.data.dataset import BatchLoader


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def schedule_batch_count(args: argparse.Namespace, batch_idx_train: int, world_size: int) -> float:
    """The batch count the model's schedules see: batches of --ref-duration seconds so far, times
    --schedule-speedup, plus FINETUNE_BATCH_COUNT_OFFSET when fine-tuning (schedules at their end)."""
    batches = adjusted_batch_count(batch_idx_train, args.max_duration, world_size, args.ref_duration)
    count = args.schedule_speedup * batches
    return count + (FINETUNE_BATCH_COUNT_OFFSET if getattr(args, "do_finetune", False) else 0)


def cr_ctc_spec_augment(time_mask_ratio: float) -> SpecAugment:
    """ZIPA's SpecAugment for CR-CTC: no warping here (done once, shared by both views), and
    `time_mask_ratio` times the default frame masks."""
    return SpecAugment(
        time_warp_factor=0,
        num_frame_masks=int(10 * time_mask_ratio),
        features_mask_size=27,
        num_feature_masks=2,
        frames_mask_size=100,
        max_frames_mask_fraction=0.15 * time_mask_ratio,
    )


def loss_scales(args: argparse.Namespace, batch_idx_train: int) -> dict[str, float]:
    """Weights of each loss; the transducer's simple/pruned weights warm up over --warm-step."""
    warm = min(batch_idx_train / args.warm_step, 1.0) if args.warm_step > 0 else 1.0
    return {
        "simple": 1.0 - warm * (1.0 - args.simple_loss_scale),
        "pruned": 0.1 + 0.9 * warm,
        "ctc": args.ctc_loss_scale,
        "cr": args.cr_loss_scale,
        "attention_decoder": args.attention_decoder_loss_scale,
    }


def compute_loss(
    model: nn.Module,
    batch: dict[str, Any],
    args: argparse.Namespace,
    batch_idx_train: int,
    is_training: bool,
    spec_augment: SpecAugment | None = None,
    unsupervised: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """The weighted loss of a batch (summed over utterances) and its parts, for logging."""
    asr = cast(AsrModel, unwrap(model))
    device = next(asr.parameters()).device
    feats = batch["inputs"].to(device)
    sup = batch["supervisions"]
    feat_lens = sup["num_frames"].to(device)
    use_cr_ctc = args.use_cr_ctc and asr.use_ctc
    use_spec_aug = use_cr_ctc and is_training
    segments = None
    if use_spec_aug:
        segments = torch.stack([sup["sequence_idx"], sup["start_frame"], sup["num_frames"]], dim=1)
    with torch.set_grad_enabled(is_training):
        simple, pruned, ctc, attention, cr = model(
            feats,
            feat_lens,
            sup["token_ids"],
            prune_range=args.prune_range,
            am_scale=args.am_scale,
            lm_scale=args.lm_scale,
            use_cr_ctc=use_cr_ctc,
            use_spec_aug=use_spec_aug,
            spec_augment=spec_augment,
            supervision_segments=segments,
            time_warp_factor=args.spec_aug_time_warp_factor,
            cr_loss_masked_scale=args.cr_loss_masked_scale,
        )
        scales = loss_scales(args, batch_idx_train)
        parts: dict[str, Tensor] = {}
        loss = torch.zeros((), device=device)
        if asr.use_transducer:
            loss = loss + scales["simple"] * simple + scales["pruned"] * pruned
            parts.update(simple_loss=simple, pruned_loss=pruned)
        if asr.use_ctc:
            loss = loss + scales["ctc"] * ctc
            parts["ctc_loss"] = ctc
            if use_cr_ctc:
                loss = loss + scales["cr"] * cr
                parts["cr_loss"] = cr
        if asr.use_attention_decoder:
            loss = loss + scales["attention_decoder"] * attention
            parts["attention_decoder_loss"] = attention
        if unsupervised:
            loss = args.unsup_cr_ctc_loss_scale * loss
    prefix = "unsup_" if unsupervised else ""
    info = {prefix + k: float(v.detach()) for k, v in parts.items()}
    info[prefix + "loss"] = float(loss.detach())
    info["frames"] = float((sup["num_frames"] // 4).sum())
    info["utterances"] = float(len(sup["token_ids"]))
    return loss, info


class Trainer:
    """State and steps of one rank's training run."""

    def __init__(
        self,
        args: argparse.Namespace,
        dist: DistInfo,
        data_module: DataModule | None,
        output_downsampling_factor: int,
    ):
        self.args = args
        self.dist = dist
        self.exp_dir = Path(args.exp_dir)
        self.device = torch.device(args.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)
        self.log = TrainLogger(self.exp_dir, dist.rank, tensorboard=args.tensorboard and dist.is_main)
        seed_everything(args.seed)
        # Denormal floats (tiny gradients, regulariser terms) make CPU arithmetic several times
        # slower; flushing them to zero changes nothing measurable in training.
        torch.set_flush_denormal(True)
        for note in getattr(args, "startup_notes", ()):
            self.log.info(note)
        finetune = FinetuneInit.from_args(args, output_downsampling_factor) if args.do_finetune else None
        self.config = finetune.config if finetune else model_config_from_args(args, output_downsampling_factor)
        if args.use_cr_ctc and getattr(args, "enable_spec_aug", False):
            raise UsageError("--use-cr-ctc True applies SpecAugment inside the model: give --enable-spec-aug False")
        self.objective = objective_of(args, self.config)
        if finetune is not None:
            recorded, source = getattr(args, "finetune_objective", (None, "this recipe's defaults"))
            self.log.info(
                f"objective: {finetune.path} was trained with {describe(recorded)}; this run trains "
                f"with {describe(self.objective)} ({source})"
            )
        model = build_model(self.config)
        self.tokenizer = Tokenizer.from_file(args.bpe_model or default_bpe_model_path())
        if self.tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(f"tokenizer has {self.tokenizer.vocab_size} tokens, model {self.config.vocab_size}")
        self.batch_idx_train = 0
        self.cur_epoch = args.start_epoch
        self.best = {"train_loss": math.inf, "valid_loss": math.inf}
        self.num_skipped = 0

        checkpoint = self._checkpoint_to_resume()
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"], strict=True)
        elif finetune is not None:  # a fresh fine-tuning run; a resumed one has its weights above
            self.log.info(finetune.load_into(model))
        del finetune
        self.frozen = frozen_prefixes(args.freeze_modules, checkpoint)
        if self.frozen:
            self.log.info(freeze(model, self.frozen))
        model.to(self.device)
        self.model_avg = AveragedModel(model) if dist.is_main else None
        self.optimizer = ScaledAdam(
            trainable_groups(get_parameter_groups_with_lrs(model, lr=args.base_lr, include_names=True)),
            lr=args.base_lr,
            clipping_scale=2.0,
        )
        self.scheduler = Eden(self.optimizer, args.lr_batches, args.lr_epochs, warmup_batches=args.warmup_batches)
        use_scaler = args.use_fp16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        self.sampler_state = None
        self.unsup_sampler_state = None
        self.pending_rng = None
        if checkpoint is not None:
            self._restore(checkpoint, model)
        self.raw_model = model
        self.model: nn.Module = model
        if dist.enabled:
            ddp = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
            ddp.register_comm_hook(None, sum_gradients)
            self.model = ddp
        if args.inf_check:
            register_inf_check_hooks(model)
        self.diagnostics = Diagnostics(model) if args.print_diagnostics else None
        self.batches_this_run = 0
        self.data = data_module
        self.spec_augment = cr_ctc_spec_augment(args.time_mask_ratio) if args.use_cr_ctc else None
        if dist.is_main:
            save_config(self.config, self.objective, self.exp_dir / "config.json")
            n_params = sum(p.numel() for p in model.parameters())
            self.log.info(f"model: {n_params / 1e6:.2f} M parameters; config saved to {self.exp_dir / 'config.json'}")
            self.log.info(f"objective: {describe(self.objective)}")

    # -- resuming ------------------------------------------------------------------------------

    def _checkpoint_to_resume(self) -> dict[str, Any] | None:
        args = self.args
        if args.start_batch > 0:
            path = self.exp_dir / f"checkpoint-{args.start_batch}.pt"
        elif args.start_epoch > 1:
            path = self.exp_dir / f"epoch-{args.start_epoch - 1}.pt"
        else:
            return None
        self.log.info(f"resuming from {path}")
        return load_training_checkpoint(path)

    def _restore(self, checkpoint: dict[str, Any], model: nn.Module) -> None:
        self.batch_idx_train = checkpoint["batch_idx_train"]
        self.best = checkpoint.get("best", self.best)
        if self.model_avg is not None and checkpoint.get("model_avg") is not None:
            self.model_avg.load_state_dict(checkpoint["model_avg"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint.get("grad_scaler") is not None:
            self.scaler.load_state_dict(checkpoint["grad_scaler"])
        if self.args.start_batch > 0:
            # Mid-epoch: continue the same epoch where its sampler stopped.
            self.cur_epoch = checkpoint["cur_epoch"]
            self.sampler_state = checkpoint.get("sampler")
        # The pseudo-labelled stream is endless and runs across epochs: its position is in
        # batch and epoch checkpoints alike.
        self.unsup_sampler_state = checkpoint.get("unsup_sampler")
        if self.args.use_unsup_cr_ctc and self.unsup_sampler_state is None:
            self.log.warning(
                "the checkpoint holds no position of the unsupervised (pseudo-labelled) sampler "
                "(written before it was saved, or without --use-unsup-cr-ctc): that stream starts "
                "from its beginning, so this resume is not exact"
            )
        own = rank_state(checkpoint, self.dist)
        set_whiten_probs(model, own["whiten_probs"])
        self.pending_rng = own["rng"]

    def _restore_pending_rng(self) -> None:
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    def save(self, path: Path, sampler_state: dict[str, Any] | None) -> None:
        """Write a checkpoint (rank 0 only); `sampler_state` is where the sampler stood after
        the last batch trained on (the unsupervised stream's position is added here)."""
        # Each rank's random generators and Whiten probabilities differ (dropout masks are drawn
        # per rank, in the shape of its batch): all of them are saved, each rank resumes its own.
        per_rank = gather_objects({"rng": rng_state(), "whiten_probs": whiten_probs(self.raw_model)})
        if not self.dist.is_main:
            return
        unsup_dl = getattr(self, "unsup_dl", None)
        save_training_checkpoint(
            path,
            self.raw_model,
            self.model_avg,
            self.optimizer,
            self.scheduler,
            self.scaler,
            sampler_state,
            counters={
                "batch_idx_train": self.batch_idx_train,
                "cur_epoch": self.cur_epoch,
                "best": self.best,
                "whiten_probs": per_rank[0]["whiten_probs"],
                "per_rank": per_rank,
                "freeze_modules": self.frozen,
                "objective": self.objective,
            },
            unsup_sampler_state=unsup_dl.sampler.state_dict() if unsup_dl is not None else None,
        )

    # -- the loop ------------------------------------------------------------------------------

    def autocast(self):
        if self.device.type != "cuda" or not (self.args.use_fp16 or self.args.use_bf16):
            return nullcontext()
        dtype = torch.bfloat16 if self.args.use_bf16 else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def run(self) -> None:
        args = self.args
        if self.data is None:
            raise ValueError("Trainer.run needs a data module (Trainer.data)")
        deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes > 0 else math.inf
        train_cuts = self.data.train_cuts()
        unsup_cuts = self.data.unsup_cuts() if args.use_unsup_cr_ctc else None
        dev_cuts = self.data.dev_cuts()
        valid_dl = self.data.valid_dataloaders(dev_cuts) if dev_cuts else None
        # One endless pseudo-labelled stream for the whole run (not restarted each epoch).
        self.unsup_dl = None
        unsup_batches = None
        if unsup_cuts is not None:
            self.unsup_dl = self.data.train_dataloaders(unsup_cuts, sampler_state_dict=self.unsup_sampler_state)
            self.unsup_sampler_state = None
            unsup_batches = _forever(self.unsup_dl)
        for epoch in range(self.cur_epoch, args.num_epochs + 1):
            self.cur_epoch = epoch
            self.scheduler.step_epoch(epoch - 1)
            if args.start_batch <= 0:
                # Resumed from epoch-(N-1).pt: the run that saved it went on to make this epoch's
                # loader, which draws from the generators, so they are restored before it is made.
                self._restore_pending_rng()
            train_dl = self.data.train_dataloaders(train_cuts, sampler_state_dict=self.sampler_state)
            if self.sampler_state is None:
                train_dl.sampler.set_epoch(epoch - 1)
            self.sampler_state = None
            finished = self.train_one_epoch(train_dl, unsup_batches, valid_dl, deadline)
            if self.diagnostics is not None:
                self.log.info(f"diagnostics over the first {DIAGNOSTIC_BATCHES} batches:\n{self.diagnostics.table()}")
                break
            if not finished:
                self.log.info(
                    f"stopped at batch {self.batch_idx_train} (--max-minutes or --max-batches): "
                    f"saved checkpoint-{self.batch_idx_train}.pt"
                )
                break
            self.save(self.exp_dir / f"epoch-{epoch}.pt", sampler_state=None)
            self.log.info(f"epoch {epoch} done; saved epoch-{epoch}.pt")
        dump_rank_params(self.raw_model, self.dist.rank)
        self.log.close()

    def train_one_epoch(self, train_dl: BatchLoader, unsup_batches: Iterator | None, valid_dl, deadline: float) -> bool:
        """Returns False when the time limit stopped the epoch early. `unsup_batches`: the
        endless pseudo-labelled stream (one batch per supervised batch), or None."""
        args = self.args
        self.model.train()
        progress = self.log.progress(desc=f"epoch {self.cur_epoch}")
        for batch in train_dl:
            # Resumed from checkpoint-N.pt: restored here, after the loader has drawn its seeds
            # and fast-forwarded its sampler, so the model sees the random numbers the saving run saw.
            self._restore_pending_rng()
            self.batch_idx_train += 1
            set_batch_count(self.model, schedule_batch_count(args, self.batch_idx_train, self.dist.world_size))
            info = self.train_step(batch, next(unsup_batches) if unsup_batches is not None else None)
            self.batches_this_run += 1
            progress.update(1)
            if self.diagnostics is not None and self.batches_this_run >= DIAGNOSTIC_BATCHES:
                progress.close()
                return False
            self.log.batch(
                self.batch_idx_train,
                info,
                lr=max(self.scheduler.get_last_lr()),
                grad_norm=self.optimizer.clipping_info().get("grad_norm"),
                every=args.log_interval,
            )
            if self.model_avg is not None and self.batch_idx_train % args.average_period == 0:
                self.model_avg.update(self.raw_model, self.batch_idx_train, args.average_period)
            if valid_dl is not None and self.batch_idx_train % args.valid_interval == 0:
                self.validate(valid_dl)
            out_of_time = past_deadline(deadline, self.device) or 0 < args.max_batches <= self.batches_this_run
            if self.batch_idx_train % args.save_every_n == 0 or out_of_time:
                self.save(self.exp_dir / f"checkpoint-{self.batch_idx_train}.pt", train_dl.sampler.state_dict())
                if self.dist.is_main:
                    remove_old_checkpoints(self.exp_dir, args.keep_last_k)
            if out_of_time:
                progress.close()
                return False
        progress.close()
        return True

    def train_step(self, batch: dict[str, Any], unsup_batch: dict[str, Any] | None) -> dict[str, float]:
        """Forward, backward and (every --grad-accumulation batches) an optimiser step. A batch
        whose loss is not finite is skipped: its gradients are dropped, the model is untouched."""
        args = self.args
        with self.autocast():
            loss, info = compute_loss(self.model, batch, args, self.batch_idx_train, True, self.spec_augment)
        if unsup_batch is not None:
            with self.autocast():
                unsup_loss, unsup_info = compute_loss(
                    self.model, unsup_batch, args, self.batch_idx_train, True, self.spec_augment, unsupervised=True
                )
            loss = loss + unsup_loss
            info.update({k: v for k, v in unsup_info.items() if k.startswith("unsup_")})
        finite = torch.tensor([1.0 if torch.isfinite(loss).item() else 0.0], device=self.device)
        if all_reduce_sum(finite).item() < self.dist.world_size:
            # Every rank skips together, so DDP's collective calls stay matched.
            self.num_skipped += 1
            self.log.warning(f"batch {self.batch_idx_train}: non-finite loss, skipped ({self.num_skipped} so far)")
            self.optimizer.zero_grad(set_to_none=True)
            info["skipped"] = 1.0
            return info
        scaled = loss / args.grad_accumulation
        if self.scaler is not None:
            self.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if self.diagnostics is not None:
            self.diagnostics.record_parameters()
        self.scheduler.step_batch(self.batch_idx_train)
        if self.batch_idx_train % args.grad_accumulation == 0:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return info

    @torch.no_grad()
    def validate(self, valid_dl: Iterable) -> dict[str, float]:
        self.model.eval()
        totals: dict[str, float] = {}
        for batch in valid_dl:
            _, info = compute_loss(self.model, batch, self.args, self.batch_idx_train, False)
            for key, value in info.items():
                totals[key] = totals.get(key, 0.0) + value
        keys = sorted(totals)
        summed = all_reduce_sum(torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=self.device))
        totals = dict(zip(keys, summed.tolist()))
        self.model.train()
        frames = max(totals.get("frames", 0.0), 1.0)
        per_frame = {k: v / frames for k, v in totals.items() if k.endswith("loss")}
        self.log.scalars("valid", per_frame, self.batch_idx_train)
        losses = ", ".join(f"{k}={v:.4f}" for k, v in per_frame.items())
        self.log.info(f"validation at batch {self.batch_idx_train}: {losses}")
        self.best["valid_loss"] = min(self.best["valid_loss"], per_frame.get("loss", math.inf))
        return per_frame


def whiten_probs(model: nn.Module) -> dict[str, float]:
    """The adaptive application probability of every Whiten module (training state that a
    resumed run needs to continue exactly)."""
    return {name: m.prob for name, m in model.named_modules() if isinstance(m, Whiten)}


def rank_state(checkpoint: dict[str, Any], dist: DistInfo) -> dict[str, Any]:
    """This rank's random generators and Whiten probabilities in `checkpoint`: its own when the
    checkpoint was written by as many ranks, else rank 0's (also in checkpoints that predate
    per-rank state)."""
    per_rank = checkpoint.get("per_rank")
    if per_rank and len(per_rank) == dist.world_size:
        return per_rank[dist.rank]
    return {"rng": checkpoint["rng"], "whiten_probs": checkpoint.get("whiten_probs")}


def set_whiten_probs(model: nn.Module, probs: dict[str, float] | None) -> None:
    for name, module in model.named_modules():
        if probs and name in probs and isinstance(module, Whiten):
            module.prob = probs[name]


def past_deadline(deadline: float, device: torch.device) -> bool:
    """Whether the --max-minutes deadline has passed on any rank: all ranks then stop after the
    same batch (a rank that stopped alone would leave the others waiting in DDP's all-reduce)."""
    if deadline == math.inf:
        return False
    late = torch.tensor([1.0 if time.monotonic() > deadline else 0.0], device=device)
    return all_reduce_sum(late).item() > 0


def _forever(loader: Iterable) -> Iterator:
    """Batches of `loader`, starting over whenever it is exhausted. The first pass's iterator
    is made now: a DataLoader draws from torch's generator when it starts a pass, and this
    draw must come before a resumed run restores the generator's state, as it does in the run
    that never stopped."""
    batches = iter(loader)

    def endless():
        nonlocal batches
        while True:
            yield from batches
            batches = iter(loader)

    return endless()


def register_inf_check_hooks(model: nn.Module) -> None:
    """Log every module whose output or output gradient is not finite (--inf-check)."""

    def check(name: str, kind: str):
        def hook(_module, _inputs, outputs):
            for out in outputs if isinstance(outputs, tuple) else (outputs,):
                if isinstance(out, Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
                    logging.warning(f"inf-check: {kind} of {name} is not finite")

        return hook

    for name, module in model.named_modules():
        module.register_forward_hook(check(name, "output"))
        module.register_full_backward_hook(check(name, "gradient"))


def train(
    args: argparse.Namespace, dist: DistInfo, data_module_class: type[DataModule], output_downsampling_factor: int
) -> None:
    """Entry point for one rank."""
    trainer = Trainer(args, dist, None, output_downsampling_factor)
    trainer.data = data_module_class(
        args,
        world_size=dist.world_size,
        rank=dist.rank,
        output_downsampling_factor=output_downsampling_factor,
        ctc=trainer.config.use_ctc,
    )
    trainer.run()

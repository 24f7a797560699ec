"""Distributed training on CPU with gloo: 2 ranks under torchrun and with --world-size spawning.

The recipes run on PyTorch's own stack; these tests launch `zipformer_crctc/train.py` the way a
user does (a subprocess) on a tiny corpus and model. Each rank's final weights come back through
the ZIPA_DUMP_RANK_PARAMS test hook (zipa.train.distributed.dump_rank_params).
"""

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_utils import free_port, kill_tree, make_tiny_corpus, run_to_end, start, training_flags

from zipa.train.checkpoints import load_training_checkpoint
from zipa.train.distributed import DUMP_RANK_PARAMS_ENV, DistInfo, run_distributed
from zipa.train.loop import Trainer

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "zipformer_crctc" / "train.py"
# The objective these runs train (the recipe, like ZIPA's, trains a transducer unless told).
CRCTC = ("--use-ctc", "True", "--use-transducer", "False", "--use-cr-ctc", "True", "--enable-spec-aug", "False")
LATEST = REPO / "local" / "latest_checkpoint.sh"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 32 training cuts: about 5 batches per rank at --max-duration 4 with 2 ranks.
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"), num_train=32)


def _run(command, dump_dir: Path, timeout: float = 600, **env_extra: str) -> None:
    """Run `command` to the end, each rank dumping its final weights to `dump_dir`."""
    run_to_end(command, timeout, **{DUMP_RANK_PARAMS_ENV: str(dump_dir), **env_extra})


def _torchrun(*flags: str) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(TRAIN), *flags]


def _kill_when(command, path: Path, timeout: float = 300) -> None:
    """Start `command` and SIGKILL it, ranks included, as soon as `path` exists: a machine
    that goes down, with no chance to clean up."""
    process = start(command)
    deadline = time.monotonic() + timeout
    try:
        while not path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        kill_tree(process.pid)
        _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"ended before it was killed:\n{stderr[-4000:]}"
    assert path.exists(), f"killed after {timeout} s without writing {path.name}:\n{stderr[-4000:]}"


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_training_checkpoint(a)["model"], load_training_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{a} and {b} differ in {key}"


def _rank_params(dump_dir: Path):
    ranks = [torch.load(dump_dir / f"rank{r}.pt", map_location="cpu", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks differ in {key}"
    return ranks[0]


def _logs(exp_dir: Path) -> dict:
    """Text of each rank's newest log file (one per run), by rank."""
    return {int(p.name.rsplit("-", 1)[1]): p.read_text() for p in sorted((exp_dir / "log").iterdir())}


def test_torchrun_two_ranks_stay_identical_and_resume_exactly(corpus, tmp_path):
    """2 ranks under torchrun keep identical weights; a run killed (SIGKILL, ranks included)
    after checkpoint-2.pt and resumed with --start-batch 2, and a run resumed from epoch-1.pt
    with --start-epoch 2, end with the weights of the run that never stopped, bit for bit.
    Bitwise, not to a tolerance: the resumed runs make the same operations on the same numbers
    in the same order (CPU kernels, and gloo's sum of two ranks, are deterministic), because
    every checkpoint holds each rank's own random generators and Whiten probabilities, which
    differ between ranks (each draws its dropout masks in the shape of its own batch)."""
    def flags(exp: Path, *extra: str) -> list:
        return training_flags(corpus, exp, *CRCTC, "--num-epochs", "2", "--save-every-n", "2", *extra)

    exp = tmp_path / "exp"
    _run(_torchrun(*flags(exp, "--tensorboard", "True")), tmp_path / "params")
    batches = load_training_checkpoint(exp / "epoch-2.pt")["batch_idx_train"]
    first_epoch = load_training_checkpoint(exp / "epoch-1.pt")["batch_idx_train"]
    assert first_epoch >= 4, "each rank should train on several batches"
    params = _rank_params(tmp_path / "params")
    final = load_training_checkpoint(exp / "epoch-2.pt")["model"]
    for key, value in final.items():
        assert torch.equal(value, params[key]), key

    # Checkpoints and TensorBoard come from rank 0 alone; every rank keeps its own log file.
    expected = {f"checkpoint-{n}.pt" for n in range(2, batches + 1, 2)} | {
        "epoch-1.pt", "epoch-2.pt", "config.json", "log", "tensorboard"}
    assert {p.name for p in exp.iterdir()} == expected
    assert len([p for p in (exp / "tensorboard").iterdir() if "tfevents" in p.name]) == 1
    assert sorted(_logs(exp)) == [0, 1]
    assert subprocess.run(["bash", str(LATEST), str(exp)], capture_output=True, text=True).stdout.strip() == str(
        batches - batches % 2
    )

    # Killed once checkpoint-2.pt is there; resumed from it in the same folder, on both ranks.
    killed = tmp_path / "killed"
    _kill_when(_torchrun(*flags(killed)), killed / "checkpoint-2.pt")
    assert not (killed / "epoch-2.pt").exists()
    moved = load_training_checkpoint(killed / "checkpoint-2.pt")["model"]
    assert any(not torch.equal(moved[k], final[k]) for k in final if final[k].is_floating_point())
    _run(_torchrun(*flags(killed, "--start-batch", "2")), tmp_path / "params-resumed")
    _rank_params(tmp_path / "params-resumed")
    _same_weights(exp / "epoch-2.pt", killed / "epoch-2.pt")
    assert all("resuming from" in text and "checkpoint-2.pt" in text for text in _logs(killed).values())

    # From the end of the first epoch.
    from_epoch = tmp_path / "from-epoch"
    from_epoch.mkdir()
    shutil.copy(exp / "epoch-1.pt", from_epoch / "epoch-1.pt")
    _run(_torchrun(*flags(from_epoch, "--start-epoch", "2")), tmp_path / "params-from-epoch")
    _same_weights(exp / "epoch-2.pt", from_epoch / "epoch-2.pt")


# Installed (via PYTHONPATH) in every process of a run: zipa.train.loop's clock, as seen by rank 1,
# stands still, so only rank 0 ever passes the --max-minutes deadline on its own.
_RANK1_CLOCK_STANDS_STILL = """
import importlib.abc
import importlib.machinery
import sys
import time
from pathlib import Path


class _Clock:
    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def monotonic():
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() == 1:
            (Path(__file__).parent / "rank1-clock-stood-still").touch()
            return 0.0
        return time.monotonic()


class _PatchLoopClock(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "zipa.train.loop":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            module.time = _Clock()

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchLoopClock())
"""


def test_world_size_spawn_two_ranks_stop_together_at_the_time_limit(corpus, tmp_path):
    """--world-size 2 spawns the ranks itself; --max-minutes stops both after the same batch
    (the ranks agree through an all-reduce), with a checkpoint to resume from.

    The ranks disagree locally: rank 1's clock stands still, so rank 1 alone would never stop;
    only rank 0's deadline, shared by the all-reduce, stops it at batch 1 too. A rank 1 that went
    on alone would wait in DDP's gradient all-reduce for a rank 0 that has gone (error or hang)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_RANK1_CLOCK_STANDS_STILL)
    pythonpath = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    exp = tmp_path / "exp"
    flags = training_flags(corpus, exp, *CRCTC, "--num-epochs", "1", "--world-size", "2", "--master-port", str(free_port()),
                           "--max-minutes", "0.0001")
    _run([sys.executable, str(TRAIN), *flags], tmp_path / "params", timeout=120, PYTHONPATH=pythonpath)
    assert (hook / "rank1-clock-stood-still").exists(), "the clock hook was not installed in rank 1"
    params = _rank_params(tmp_path / "params")
    assert not (exp / "epoch-1.pt").exists()
    saved = load_training_checkpoint(exp / "checkpoint-1.pt")
    assert saved["batch_idx_train"] == 1
    assert all(torch.equal(saved["model"][k], params[k]) for k in params)
    logs = _logs(exp)
    assert sorted(logs) == [0, 1]
    assert all("stopped at batch 1 (--max-minutes or --max-batches)" in text for text in logs.values())


def _record_start_method(info: DistInfo) -> None:
    Path(os.environ["ZIPA_TEST_OUT"], f"rank{info.rank}").write_text(multiprocessing.get_start_method())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_spawned_ranks_fork_their_data_loader_workers(tmp_path, monkeypatch):
    """Ranks started by --world-size start processes (their DataLoader workers) by fork, as
    torchrun's ranks do: mp.spawn leaves "spawn" as their start method, with which every worker
    imports torch and lhotse again."""
    monkeypatch.setenv("ZIPA_TEST_OUT", str(tmp_path))
    run_distributed(_record_start_method, world_size=2, master_port=free_port())
    assert [(tmp_path / f"rank{rank}").read_text() for rank in (0, 1)] == ["fork", "fork"]


def test_ranks_get_disjoint_cuts(corpus):
    """The data module's training sampler gives each rank its own cuts (world_size=2)."""
    import argparse

    from zipa.data.module import AsrDataModule

    parser = argparse.ArgumentParser()
    AsrDataModule.add_arguments(parser)
    args = parser.parse_args(["--train-shar-dirs", str(corpus["train"]), "--max-duration", "4", "--num-workers", "0"])
    seen = []
    for rank in (0, 1):
        data = AsrDataModule(args, world_size=2, rank=rank)
        loader = data.train_dataloaders(data.train_cuts())
        loader.sampler.set_epoch(0)
        batches = [[cut.id for cut in batch["supervisions"]["cut"]] for batch in loader]
        seen.append({cut_id for batch in batches for cut_id in batch})
        assert len(batches) >= 3
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_only_rank_0_writes_checkpoints(tmp_path):
    trainer = Trainer.__new__(Trainer)  # save() gathers every rank's state, then looks at the rank
    trainer.dist = DistInfo(rank=1, local_rank=1, world_size=2)
    trainer.raw_model = torch.nn.Linear(1, 1)
    trainer.save(tmp_path / "checkpoint-1.pt", sampler_state=None)
    assert not (tmp_path / "checkpoint-1.pt").exists()


def test_latest_checkpoint_script(tmp_path):
    def latest(folder):
        result = subprocess.run(["bash", str(LATEST), str(folder)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert latest(tmp_path / "absent") == "0"
    assert latest(tmp_path) == "0"
    for name in ["checkpoint-8.pt", "checkpoint-12.pt", "checkpoint-x.pt", "epoch-3.pt", "checkpoint-99.pt.tmp"]:
        (tmp_path / name).touch()
    assert latest(tmp_path) == "12"
    assert subprocess.run(["bash", str(LATEST)], capture_output=True).returncode == 2


def test_slurm_example_launches_torchrun_with_valid_recipe_flags():
    """examples/slurm/train_crctc.sbatch: shell syntax, the torchrun rendezvous over the
    job's nodes inside the container, and train.py flags that the CR-CTC recipe accepts."""
    sbatch = REPO / "examples" / "slurm" / "train_crctc.sbatch"
    text = sbatch.read_text()
    assert subprocess.run(["bash", "-n", str(sbatch)], capture_output=True).returncode == 0
    assert "#SBATCH --nodes=2" in text and "#SBATCH --requeue" in text
    command = " ".join(text.split("srun ", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").split())
    for part in ['apptainer exec --nv', 'torchrun --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS"',
                 '--rdzv-backend c10d', '--rdzv-endpoint "$MASTER_ADDR:29500"', '--rdzv-id "$SLURM_JOB_ID"',
                 '/opt/zipa/zipformer_crctc/train.py', '--start-batch "$START_BATCH"']:
        assert part in command, part

    # Expand the recipe's arguments as bash would, then parse them with the recipe's parser.
    recipe_args = command.split("/opt/zipa/zipformer_crctc/train.py", 1)[1]
    env = {"PATH": os.environ["PATH"], "EXP_DIR": "/scratch/exp", "START_BATCH": "8000", "MAX_MINUTES": "1420",
           "NUM_EPOCHS": "30", "NUM_WORKERS": "4", "DATA": "/nonexistent/data"}
    expanded = subprocess.run(["bash", "-c", f'printf "%s\\n" {recipe_args}'], env=env, capture_output=True, text=True)
    assert expanded.returncode == 0, expanded.stderr
    from zipa.data import module as data_module
    from zipa.train.recipe import training_parser

    parser = training_parser("test", data_module.AsrDataModule, dict(use_ctc=True, use_transducer=False),
                             dict(use_cr_ctc=True, enable_spec_aug=False))
    args = parser.parse_args(expanded.stdout.splitlines())
    assert (args.start_batch, args.max_minutes, args.preset, args.use_fp16) == (8000, 1420, "large", True)
    assert args.use_cr_ctc and args.use_ctc and not args.use_transducer and not args.enable_spec_aug

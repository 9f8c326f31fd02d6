"""The one training loop every trainer runs (LoopTrainer and its hooks), and what it needs: run-folder locks,
atomic resumable checkpoints (with RNG states), CSV logs, progress bars, torchrun helpers."""
from __future__ import annotations

import csv
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from .files import atomic_path, remove_stale_temps


# -- several processes (torchrun) -------------------------------------------------------------------------


def world_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def finish_distributed() -> None:
    """Wait for every process (rank 0 may still be exporting), then tear the process group down. Leaving it to
    interpreter exit can abort a process ("terminate called without an active exception") while gloo threads run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def average_gradients(params) -> None:
    """All-reduce and average the gradients of ``params`` across processes (what DistributedDataParallel does,
    written out so double-backward regularisers need no special casing)."""
    import torch.distributed as dist
    _, world = world_info()
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def set_threads(n: int | None, key: str = "exp.threads") -> None:
    """torch's CPU threads from a config key; unset (None) leaves them as the environment (OMP_NUM_THREADS) made
    them, so a job started with OMP_NUM_THREADS=1 next to others keeps to one thread."""
    if n is None:
        return
    if int(n) < 1:
        raise ValueError(f"{key}={n}: give a number of threads >= 1, or leave it unset to follow OMP_NUM_THREADS")
    torch.set_num_threads(int(n))


def optimiser_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params, grad_clip: float = 0.0) -> None:
    """Backward, gradients averaged across torchrun processes, optional norm clipping, one optimiser step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(params)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


def rng_state() -> dict:
    """All global RNG states, as tensors and plain containers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                     gauss], "python": random.getstate(),
            # noise drawn on a GPU comes from its own generator: without it a GPU run does not resume exactly
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


class CheckpointFileError(ValueError):
    """A run's checkpoint.pt that cannot be read (truncated, corrupt) or is not a checkpoint of this kind of run."""


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state` (weights_only: tensors, containers, numpy RNG)."""
    import pickle
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such training checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CheckpointFileError(
            f"{path}: not a readable training checkpoint, it is truncated or corrupt "
            f"({(str(e).splitlines() or [type(e).__name__])[0][:160]}); restore a good copy, or move it away to "
            "start the run afresh") from e
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointFileError(f"{path}: not a training checkpoint (no step); is this the right run folder?")
    return state


class CsvLogger:
    """Appends one row per call to ``path``; columns are fixed by the first row. Resume-safe: an existing
    file is truncated to the rows at or before the resumed step so a restarted run does not log twice."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.fields = list(rows[0].keys())
                keep = [r for r in rows if int(float(r.get("step", 0))) <= resume_step]
                with open(self.path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=self.fields)
                    w.writeheader()
                    w.writerows(keep)
        elif self.path.exists():
            self.path.unlink()

    def log(self, **row) -> None:
        if self.fields is None:
            self.fields = list(row.keys())
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def progress(total: int, initial: int = 0, desc: str = "", quiet: bool = False) -> tqdm:
    """A tqdm bar; off when stderr is not a terminal (CI logs) unless DOMAIN_ADAPT_PROGRESS=1."""
    enabled = (sys.stderr.isatty() or os.environ.get("DOMAIN_ADAPT_PROGRESS") == "1") and not quiet
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


class RunLockedError(RuntimeError):
    """Another process trains in this run folder."""


class RunLock:
    """An exclusive lock on a run folder, so two processes never train (and append to log.csv) in one folder: an
    ``fcntl.flock`` on ``<run>/.lock``, which holds the owner's PID for the message. The kernel drops the lock when
    its process ends, however it ends: a stale ``.lock`` file never blocks a later run."""

    NAME = ".lock"

    def __init__(self, run_dir: str | Path):
        import fcntl
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        self.path = run / self.NAME
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise RunLockedError(f"{run} is in use by another training process (PID {holder}, see {self.path}): "
                                 "wait for it to finish or stop it, or choose another exp.run_dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing the file drops the flock


#: A progress reporter: called after each step with (step, total steps, that step's stats).
Progress = Callable[[int, int, dict], None]


class BarProgress:
    """The default progress reporter: a tqdm bar (see :func:`progress`) with the step's float stats after it."""

    def __init__(self, total: int, initial: int, desc: str, quiet: bool):
        self.bar = progress(total, initial=initial, desc=desc, quiet=quiet)

    def __call__(self, step: int, total: int, stats: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items() if isinstance(v, float)})

    def close(self) -> None:
        self.bar.close()


@dataclass
class LoopHooks:
    """What a caller (the app, a study, a test) plugs into :meth:`LoopTrainer.loop`; none of it changes what is
    trained. ``on_step``: called after each step (and after that step's log row, sample grid and checkpoint are
    written) with (step, stats). ``should_stop``: asked before each step; when it answers True the loop writes a
    checkpoint and returns (``--resume`` continues from there exactly). ``progress``: the one progress reporter
    (:data:`Progress`); None: a tqdm bar. Under torchrun every process must get the same ``should_stop`` answer."""

    on_step: list[Callable[[int, dict], None]] = field(default_factory=list)
    should_stop: Callable[[], bool] | None = None
    progress: Progress | None = None


class LoopTrainer:
    """The loop every config-driven trainer shares: resume, config copy, CSV/TensorBoard logs, a progress bar,
    sample grids and atomic checkpoints at fixed cadences, and the caller's :class:`LoopHooks`.

    A subclass sets ``cfg`` (with ``exp.name``, ``exp.run_dir`` and a ``logging`` section of ``log_every``,
    ``checkpoint_every`` and, for trainers with sample grids, ``sample_every`` and ``tensorboard``), ``run_dir``,
    ``step``, ``elapsed``, ``quiet`` and ``rank`` (0 unless distributed), and defines ``train_step() -> stats``,
    ``state_dict()``, ``load_state_dict(state)`` and ``write_samples(path)``; ``log_extra()`` adds columns to the
    log, ``log_row``/``log_due`` reshape it. ``hooks`` (set before :meth:`loop`, or given to it) are the caller's.
    After :meth:`loop`, ``stopped`` says whether ``should_stop`` ended it early.
    """

    rank = 0
    hooks: LoopHooks | None = None
    stopped = False

    def _log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def log_extra(self) -> dict:
        return {}

    def log_row(self, stats: dict) -> dict:
        """The log.csv row of this step (its first row fixes the columns)."""
        return dict(step=self.step, elapsed_s=self.elapsed, **self.log_extra(), **stats)

    def log_due(self, stats: dict, last: bool) -> bool:
        """Whether this step gets a log.csv row: every ``logging.log_every`` steps and at the last."""
        return self.step % self.cfg.logging.log_every == 0 or last

    def checkpoint_path(self) -> Path:
        return Path(self.run_dir) / "checkpoint.pt"

    def start(self, resume: bool) -> None:
        """Lock the run folder (rank 0), load its checkpoint (``resume``) or refuse to overwrite one, clear the
        temporary files of killed checkpoint writes, write the config. :meth:`loop` releases the lock."""
        from .config import save_config
        ckpt, run = self.checkpoint_path(), Path(self.run_dir)
        if resume and not run.is_dir():
            raise FileNotFoundError(f"--resume: {run} does not exist, so there is nothing to resume; check "
                                    "exp.run_dir, or leave out --resume to start a new run there")
        if resume:
            self._check_same_trainer(run)  # before the lock: another tool's folder is left as it is
        self._run_lock = RunLock(run) if self.rank == 0 else None
        try:
            if resume and ckpt.exists():
                state = load_training_state(ckpt)
                try:
                    self.load_state_dict(state)
                except KeyError as e:
                    raise CheckpointFileError(f"{ckpt}: not a checkpoint of this kind of run (it has no {e}); "
                                              "resume it with the command that wrote it") from e
                self._log(f"resumed {ckpt} at step {self.step}")
            elif ckpt.exists() and self.rank == 0:
                raise FileExistsError(f"{ckpt} exists: pass --resume to continue it, or choose another exp.run_dir")
            elif resume and self.rank == 0:
                print(f"note: --resume: no checkpoint in {run}; starting fresh", file=sys.stderr, flush=True)
            if self.rank == 0:
                removed = remove_stale_temps(ckpt)
                if removed:
                    self._log(f"removed {len(removed)} temporary file(s) of interrupted checkpoint writes in {run}")
                save_config(self.cfg, run / "config.yaml")
        except BaseException:
            self.release_run_lock()
            raise

    def _check_same_trainer(self, run: Path) -> None:
        """Refuse to resume a run folder another trainer wrote (its config.yaml names its exp.trainer)."""
        from omegaconf import OmegaConf

        from .config import ConfigError, read_yaml
        theirs_file, ours = run / "config.yaml", getattr(getattr(self.cfg, "exp", None), "trainer", None)
        if ours is None or not theirs_file.is_file():
            return
        try:
            theirs = OmegaConf.select(read_yaml(theirs_file), "exp.trainer", default=None)
        except ConfigError:  # an unreadable config.yaml: the checkpoint itself decides
            return
        if theirs is not None and theirs != ours:
            raise CheckpointFileError(f"{run} holds a {theirs!r} run (its config.yaml), not a {ours!r} one: resume "
                                      "it with the command that started it, or choose another exp.run_dir")

    def release_run_lock(self) -> None:
        lock = getattr(self, "_run_lock", None)
        if lock is not None:
            lock.release()
            self._run_lock = None

    def loop(self, iters: int, resume: bool, hooks: LoopHooks | None = None) -> None:
        """Train until step ``iters`` (after :meth:`start`), or until ``hooks.should_stop()``; releases the run
        folder's lock however it ends. ``hooks`` default to ``self.hooks``."""
        main = self.rank == 0
        tb = None
        try:
            log = CsvLogger(Path(self.run_dir) / "log.csv", resume_step=self.step if resume else None) if main \
                else None
            if getattr(self.cfg.logging, "tensorboard", False) and main:
                from torch.utils.tensorboard import SummaryWriter
                tb = SummaryWriter(str(Path(self.run_dir) / "tensorboard"))
            self._loop(iters, log, tb, hooks or self.hooks or LoopHooks())
        finally:
            self.release_run_lock()
            if tb is not None:
                tb.close()

    def _loop(self, iters: int, log: "CsvLogger | None", tb, hooks: LoopHooks) -> None:
        import time
        lg = self.cfg.logging
        main = self.rank == 0
        sample_every = getattr(lg, "sample_every", None)  # None: a trainer without sample grids
        report = hooks.progress or BarProgress(iters, self.step, self.cfg.exp.name, self.quiet)
        t0 = time.time() - self.elapsed
        self.stopped = False
        try:
            while self.step < iters:
                if hooks.should_stop is not None and hooks.should_stop():
                    self.stopped = True
                    if main:  # what --resume continues from
                        save_training_state(self.checkpoint_path(), self.state_dict())
                    return
                stats = self.train_step()
                self.elapsed = time.time() - t0
                report(self.step, iters, stats)
                if main:
                    self._write_step_outputs(stats, self.step == iters, log, tb, sample_every)
                for hook in hooks.on_step:
                    hook(self.step, stats)
        finally:
            if isinstance(report, BarProgress):
                report.close()

    def _write_step_outputs(self, stats: dict, last: bool, log: CsvLogger, tb, sample_every: int | None) -> None:
        """The log row, sample grid and checkpoint due after this step (rank 0)."""
        lg = self.cfg.logging
        if self.log_due(stats, last):
            log.log(**self.log_row(stats))
            if tb is not None:
                for k, v in stats.items():
                    tb.add_scalar(k, v, self.step)
        if sample_every is not None and (self.step % sample_every == 0 or last):
            self.write_samples(Path(self.run_dir) / "samples" / f"step{self.step:06d}.png")
        if self.step % lg.checkpoint_every == 0 or last:
            save_training_state(self.checkpoint_path(), self.state_dict())


def run_facts(run_dir: str | Path) -> dict:
    """Steps and wall time of a training run folder (from its checkpoint), for model cards."""
    run = Path(run_dir)
    state = load_training_state(run / "checkpoint.pt")
    return {"run": str(run), "steps": int(state["step"]), "wall_time_min": round(state["elapsed_s"] / 60, 1)}

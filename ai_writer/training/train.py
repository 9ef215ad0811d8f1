"""Training a character-level RWKV-7 from a text corpus, nanoGPT style.

Reads top to bottom: the options, the learning-rate schedule, batches, evaluation, the
training checkpoint, then `train`, the loop. The corpus is tokenized once (corpus.py); each
step draws `batch_size` random windows of ctx_len + 1 characters from the training text
with a seeded generator, and minimises the cross-entropy of the next character (in nats;
bits per character = loss / ln 2) with AdamW, a linear warm-up and a cosine decay. Every
`eval_every` steps a fixed set of held-out windows is scored; the best weights are written
to `out` as the native single-file model. A full checkpoint (`out` + ".train.pt") lets an
interrupted run continue and end exactly where an uninterrupted one would. With
`punctuation="modern"` the corpus is modernized (text/punctuation.py) and the model says so.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ai_writer.models.checkpoint import OPTIONAL_LAYER0_KEYS, Checkpoint, load_checkpoint, save_native
from ai_writer.training.corpus import load_corpus
from ai_writer.errors import BackendError, InputTextError, ModelFileError, SettingsError
from ai_writer.files import atomic_path
from ai_writer.models.rwkv.rwkv7 import RWKV7
from ai_writer.models.rwkv.init import init_weights, new_model_config
from ai_writer.text.punctuation import MODERN, writes_modern
from ai_writer.training.progress import QuietProgress, StepStats, TrainProgress

CHECKPOINT_FORMAT = "ai-writer-train-1"
DEFAULT_MINUTES = 60.0
TIMING_PASSES = 8  # forward+backward passes timed to turn --minutes into a step count
LN2 = math.log(2)


@dataclass(frozen=True)
class TrainOptions:
    corpus: tuple[str, ...]  # UTF-8 text files, one paragraph per line
    out: str  # the native .safetensors model (best weights); the checkpoint is out + ".train.pt"
    # model shape: L6-D256 has 5.2M weights in its blocks plus 2 x 256 per vocabulary entry (7.9M in
    # all with the 5,132 characters of corpus/), small enough to train on a CPU in hours
    n_layer: int = 6
    n_embd: int = 256
    head_size: int = 64  # the RWKV-7 standard; n_embd must be a multiple of it
    ctx_len: int = 256  # characters per training window: several paragraphs
    # optimisation
    batch_size: int = 16  # windows per step: 4,096 characters, 1-2.5 s per step on 2 CPU cores
    lr: float = 6e-4  # peak learning rate, as the RWKV-LM x070 demo run (decaying to 6e-5 there too)
    lr_final: float | None = None  # at the end of the cosine decay; None = lr / 10
    warmup_steps: int = 100  # linear warm-up from lr / warmup_steps to lr
    weight_decay: float = 0.1  # on the projection matrices and the head only
    beta1: float = 0.9
    beta2: float = 0.99  # shorter memory than 0.999: steadier with small batches (RWKV, nanoGPT char)
    grad_clip: float = 1.0
    # data
    min_char_count: int = 5  # rarer characters become the unknown character
    cache_dir: str | None = None  # where tokenized corpora are kept; None = no cache
    # length of the run: a number of steps, or minutes of wall time (default DEFAULT_MINUTES)
    steps: int | None = None
    minutes: float | None = None
    # evaluation and checkpoints (0 = only at the end)
    eval_every: int = 250
    eval_tokens: int = 65536  # characters of held-out text scored per evaluation
    checkpoint_every: int = 250
    # reproducibility and hardware
    seed: int = 0
    device: str = "cpu"  # cpu | cuda
    dtype: str = "fp32"  # fp32 | bf16 (autocast; the weights and optimizer stay fp32)
    threads: int | None = None  # CPU threads; None = torch's default
    resume: bool = False  # continue from out + ".train.pt"
    # fine-tuning: start from this native model's weights, shape and vocabulary (the shape
    # options above are then unused) instead of random weights and a vocabulary from the corpus
    init_from: str | None = None
    # "modern": train on text/punctuation.modernize'd text and mark the model so (it then never writes
    # 「」『』．...); "keep": the corpus as it is; None: as the --init-from model says, else "keep"
    punctuation: str | None = None


@dataclass
class TrainResult:
    step: int  # steps done
    total_steps: int
    best_val_loss: float | None  # nats per character on the held-out windows
    last_train_loss: float | None
    interrupted: bool
    out: Path
    checkpoint: Path
    tokens_per_s: float | None
    history: list[dict] = field(default_factory=list)  # {"step", "val_loss", "train_loss"} per evaluation

    @property
    def best_val_bpc(self) -> float | None:
        return None if self.best_val_loss is None else self.best_val_loss / LN2


def checkpoint_path(out: str | os.PathLike) -> Path:
    return Path(str(out) + ".train.pt")


def lr_at(step: int, total: int, options: TrainOptions) -> float:
    """Learning rate of step `step` (0-based): linear warm-up, then cosine decay to lr_final."""
    lr_final = options.lr / 10 if options.lr_final is None else options.lr_final
    if step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    progress = (step - options.warmup_steps) / max(1, total - options.warmup_steps)
    return lr_final + 0.5 * (options.lr - lr_final) * (1 + math.cos(math.pi * min(1.0, progress)))


def get_batch(data: np.ndarray, batch_size: int, ctx_len: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` random windows of ctx_len + 1 tokens: (B, ctx_len + 1) int64."""
    starts = torch.randint(0, len(data) - ctx_len, (batch_size,), generator=generator).numpy()
    return torch.from_numpy(data[starts[:, None] + np.arange(ctx_len + 1)].astype(np.int64))


def eval_windows(val: np.ndarray, ctx_len: int, eval_tokens: int) -> torch.Tensor:
    """A fixed set of held-out windows, spread evenly over the validation text: (n, T + 1) int64."""
    width = min(ctx_len + 1, len(val))
    if width < 2:
        return torch.zeros(0, 2, dtype=torch.int64)
    n = max(1, min(eval_tokens // (width - 1), len(val) - width + 1))
    starts = np.linspace(0, len(val) - width, n).round().astype(np.int64)
    return torch.from_numpy(val[starts[:, None] + np.arange(width)].astype(np.int64))


def window_loss(model: RWKV7, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over windows (B, T + 1), each from a zero state."""
    logits, _ = model(windows[:, :-1], model.zero_state(windows.shape[0]), all_logits=True)
    return F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())


@torch.no_grad()
def held_out_loss(model: RWKV7, windows: torch.Tensor, batch_size: int, autocast) -> float | None:
    if len(windows) == 0:
        return None
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(model.head.weight.device)
        with autocast():
            total += window_loss(model, batch).item() * batch[:, 1:].numel()
        count += batch[:, 1:].numel()
    return total / count


def make_optimizer(model: RWKV7, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW with weight decay on the projection matrices and the head only.

    Embedding rows, norms, lerp factors, biases and the LoRA matrices are not decayed: they are
    scales and offsets that decay would pull towards a meaningless zero (the embedding feeds a
    LayerNorm, so shrinking it only amplifies noise). The decay bias w0 learns at twice the rate,
    as in the reference RWKV-7 trainer.
    """
    decayed, plain, fast = [], [], []
    for name, parameter in model.named_parameters():
        if name.endswith("att.w0"):
            fast.append(parameter)
        elif name.endswith(".weight") and parameter.dim() == 2 and name != "emb.weight":
            decayed.append(parameter)
        else:
            plain.append(parameter)
    groups = [
        {"params": decayed, "weight_decay": options.weight_decay, "lr_scale": 1.0},
        {"params": plain, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": fast, "weight_decay": 0.0, "lr_scale": 2.0},
    ]
    return torch.optim.AdamW(groups, lr=options.lr, betas=(options.beta1, options.beta2), eps=1e-8)


def check_options(options: TrainOptions) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise SettingsError(message)

    for name in ("n_layer", "n_embd", "head_size", "ctx_len", "batch_size", "min_char_count"):
        need(getattr(options, name) >= 1, f"{name} must be at least 1, got {getattr(options, name)}")
    need(options.n_embd % options.head_size == 0,
         f"n_embd ({options.n_embd}) must be a multiple of head_size ({options.head_size})")
    need(options.lr > 0, f"lr must be positive, got {options.lr}")
    need(options.lr_final is None or 0 <= options.lr_final <= options.lr, "lr_final must lie between 0 and lr")
    need(options.steps is None or options.minutes is None, "give either steps or minutes, not both")
    need(options.steps is None or options.steps >= 1, f"steps must be at least 1, got {options.steps}")
    need(options.minutes is None or options.minutes > 0, f"minutes must be positive, got {options.minutes}")
    for name in ("warmup_steps", "eval_every", "checkpoint_every", "eval_tokens", "seed"):
        need(getattr(options, name) >= 0, f"{name} must be at least 0, got {getattr(options, name)}")
    need(options.device in ("cpu", "cuda"), f"device must be cpu or cuda, got {options.device!r}")
    need(options.dtype in ("fp32", "bf16"), f"dtype must be fp32 or bf16, got {options.dtype!r}")
    need(options.threads is None or options.threads >= 1, f"threads must be at least 1, got {options.threads}")
    need(options.punctuation in (None, MODERN, "keep"),
         f"punctuation must be {MODERN} or keep, got {options.punctuation!r}")
    need(bool(options.corpus), "no corpus files given")
    parent = Path(options.out).resolve().parent
    need(parent.is_dir(), f"{options.out}: the folder {parent} does not exist")


# --- the training checkpoint: plain tensors, dicts, lists, str and numbers (torch.load(weights_only=True))

def save_training_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_training_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise ModelFileError(f"{path}: no training checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or refused file: one line, never a traceback
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path}: cannot read the training checkpoint: {first_line}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not an ai-writer training checkpoint")
    return state


def _options_to_dict(options: TrainOptions) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(options).items()}


def _resumed_options(saved: dict, requested: TrainOptions, path: Path) -> TrainOptions:
    """The checkpoint's settings, except where the run is (paths, device, threads, cache, checkpoints)."""
    try:
        stored = dict(saved["options"])
        stored["corpus"] = tuple(stored["corpus"])
        known = {f.name for f in dataclasses.fields(TrainOptions)}
        options = TrainOptions(**{k: v for k, v in stored.items() if k in known})
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{path}: the settings stored in the training checkpoint are damaged") from None
    return dataclasses.replace(
        options, corpus=requested.corpus, out=requested.out, device=requested.device, threads=requested.threads,
        cache_dir=requested.cache_dir, checkpoint_every=requested.checkpoint_every, resume=True,
    )


class _StopRequest:
    """Ctrl-C asks the loop to stop after the current step (and save); a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _initial_model(path: str) -> Checkpoint:
    checkpoint = load_checkpoint(path)
    if checkpoint.tokenizer is None:
        raise SettingsError(f"{path}: fine-tuning needs an ai-writer .safetensors model, which carries its vocabulary")
    return checkpoint


def _punctuation(options: TrainOptions, init: Checkpoint | None) -> str | None:
    """MODERN when the corpus is to be modernized and the model marked so, else None."""
    if options.punctuation is None:
        return MODERN if init is not None and writes_modern(init.tokenizer) else None
    return MODERN if options.punctuation == MODERN else None


def _device(options: TrainOptions) -> torch.device:
    if options.device == "cuda" and not torch.cuda.is_available():
        raise BackendError("device cuda needs an NVIDIA GPU and a CUDA build of torch; none is usable here")
    return torch.device(options.device)


def _autocast(options: TrainOptions, device: torch.device):
    if options.dtype == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def _planned_steps(model, optimizer, corpus, options, device, autocast, budget_s: float, progress) -> int:
    """Turn a time budget into a step count, from a few timed forward+backward passes.

    The passes use batches from their own generator and leave the weights untouched (the
    gradients are discarded), so the run itself is the same as one given that many steps.
    """
    generator = torch.Generator().manual_seed(options.seed + 1)
    durations = []
    timing_began = time.perf_counter()
    for i in range(TIMING_PASSES + 2):  # the first two warm up allocators and kernels
        if len(durations) >= 2 and time.perf_counter() - timing_began > 0.02 * budget_s:
            break  # slow steps: a few are enough, the budget is for training
        batch = get_batch(corpus.train, options.batch_size, options.ctx_len, generator).to(device)
        began = time.perf_counter()
        with autocast():
            loss = window_loss(model, batch)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            durations.append(time.perf_counter() - began)
        optimizer.zero_grad(set_to_none=True)
    step_s = float(np.median(durations)) * 1.05  # + the optimizer step
    eval_batches = math.ceil(min(options.eval_tokens, len(corpus.val)) / (options.batch_size * options.ctx_len))
    eval_s = eval_batches * step_s / 3  # a forward pass costs about a third of forward+backward
    per_step = step_s + (eval_s / options.eval_every if options.eval_every else 0.0)
    left = budget_s - (time.perf_counter() - timing_began) - eval_s  # the final evaluation comes on top
    total = max(1, int(left / per_step))
    progress.message(f"timed {step_s:.2f} s per step: {total} steps fit in the time given")
    return total


def train(options: TrainOptions, progress: TrainProgress | None = None) -> TrainResult:
    """Train (or resume) a model as `options` say; returns when done or stopped by Ctrl-C."""
    check_options(options)
    threads = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        return _train(options, progress or QuietProgress())
    finally:
        torch.set_num_threads(threads)


def _train(options: TrainOptions, progress: TrainProgress) -> TrainResult:
    started = time.perf_counter()
    ckpt_path = checkpoint_path(options.out)
    saved, new_total = None, None
    if options.resume:
        saved = load_training_checkpoint(ckpt_path)
        new_total = options.steps  # --steps with --resume: a new length for the run, the schedule follows it
        options = _resumed_options(saved, options, ckpt_path)
    elif ckpt_path.exists():
        raise SettingsError(f"{ckpt_path} exists: resume that run, or remove the file to start a new one")
    device = _device(options)
    autocast = _autocast(options, device)

    init = _initial_model(options.init_from) if options.init_from else None
    punctuation = _punctuation(options, init)
    corpus = load_corpus(options.corpus, min_char_count=options.min_char_count, cache_dir=options.cache_dir,
                         vocabulary=init.tokenizer if init is not None else None, punctuation=punctuation)
    if saved is not None and saved["corpus_key"] != corpus.key:
        raise InputTextError(f"{ckpt_path}: the corpus files differ from the ones this run was started with")
    if len(corpus.train) < options.ctx_len + 1:
        raise InputTextError(
            f"{', '.join(options.corpus)}: the training text has {len(corpus.train)} characters, fewer than "
            f"ctx_len + 1 = {options.ctx_len + 1}; give more text or a shorter context"
        )
    tokenizer = corpus.tokenizer
    if init is not None:
        config = init.config
        model = RWKV7(config)
        model.load_state_dict({k: v.float() for k, v in init.tensors.items() if k not in OPTIONAL_LAYER0_KEYS})
        progress.message(f"fine-tuning {options.init_from}: its shape and vocabulary are kept")
    else:
        config = new_model_config(tokenizer.vocab_size, options.n_layer, options.n_embd, options.head_size,
                                  options.ctx_len)
        model = RWKV7(config)
        init_weights(model, options.seed)
    model.to(device)
    optimizer = make_optimizer(model, options)
    data_generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    windows = eval_windows(corpus.val, options.ctx_len, options.eval_tokens)
    step, total, best, history, last_loss = 0, options.steps, None, [], None
    recent_losses: list[float] = []  # training losses since the last evaluation
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            data_generator.set_state(saved["data_rng"])
            torch.set_rng_state(saved["torch_rng"])
            step, total, best, history = saved["step"], saved["total_steps"], saved["best_val_loss"], saved["history"]
            recent_losses = list(saved.get("recent_losses", []))
            if new_total is not None and new_total != total:
                if new_total <= step:
                    raise SettingsError(f"--steps {new_total}: this run has already done {step} steps")
                progress.message(f"the run's length changes from {total} to {new_total} steps; the learning rate "
                                 "follows the new schedule from here")
                total = new_total
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelFileError(f"{ckpt_path}: the training checkpoint is damaged ({first_line})") from None
        progress.message(f"resuming {ckpt_path} at step {step} of {total}; settings as stored in it")

    n_params = sum(p.numel() for p in model.parameters())
    progress.message(
        f"{config.describe()}, {n_params / 1e6:.2f}M weights; corpus {len(corpus.train):,} training and "
        f"{len(corpus.val):,} held-out characters ({corpus.n_unknown_train:,} unknown)"
        + ("; punctuation modernized" if punctuation == MODERN else "")
        + ("; tokenized text read from the cache" if corpus.from_cache else "")
    )
    if total is None:
        budget = (options.minutes or DEFAULT_MINUTES) * 60 - (time.perf_counter() - started)
        total = _planned_steps(model, optimizer, corpus, options, device, autocast, budget, progress)

    def checkpoint_state() -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "step": step,
            "total_steps": total,
            "data_rng": data_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_val_loss": best,
            "history": history,
            "recent_losses": list(recent_losses),
            "options": _options_to_dict(options),
            "config": dataclasses.asdict(config),
            "vocab": list(tokenizer.chars),
            "unknown_char": tokenizer.unknown_char,
            "corpus_key": corpus.key,
        }

    def evaluate() -> tuple[float | None, bool]:
        nonlocal best
        val_loss = held_out_loss(model, windows, options.batch_size, autocast)
        train_loss = float(np.mean(recent_losses)) if recent_losses else None
        recent_losses.clear()
        history.append({"step": step, "val_loss": val_loss, "train_loss": train_loss})
        improved = best is None or val_loss is None or val_loss < best
        if improved:
            best = val_loss if val_loss is not None else best
            save_native(options.out, config, model.state_dict(), tokenizer)
        return val_loss, improved

    tokens_per_step = options.batch_size * options.ctx_len
    speed = None
    interrupted = False
    consistent = True  # False while a step is half done: nothing safe to save then
    progress.start(total, step)
    try:
        with _StopRequest() as stop:
            while step < total:
                if stop.requested:
                    raise KeyboardInterrupt
                consistent = False
                began = time.perf_counter()
                lr = lr_at(step, total, options)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                batch = get_batch(corpus.train, options.batch_size, options.ctx_len, data_generator).to(device)
                with autocast():
                    loss = window_loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
                optimizer.step()
                step += 1
                last_loss = loss.item()
                recent_losses.append(last_loss)
                seconds = time.perf_counter() - began
                speed = tokens_per_step / seconds if speed is None else 0.9 * speed + 0.1 * tokens_per_step / seconds
                evaluated = None
                if (options.eval_every and step % options.eval_every == 0) or step == total:
                    evaluated = evaluate()
                if (options.checkpoint_every and step % options.checkpoint_every == 0) or step == total:
                    save_training_checkpoint(ckpt_path, checkpoint_state())
                consistent = True
                progress.update(StepStats(step, total, last_loss, speed, lr))
                if evaluated is not None:
                    progress.evaluated(step, *evaluated)
    except KeyboardInterrupt:
        if not consistent:
            raise  # a second Ctrl-C in the middle of a step: the last checkpoint stays as it was
        save_training_checkpoint(ckpt_path, checkpoint_state())
        progress.message(f"stopped at step {step} of {total}; saved {ckpt_path}: continue with --resume")
        interrupted = True
    finally:
        progress.close()
    return TrainResult(step, total, best, last_loss, interrupted, Path(options.out), ckpt_path, speed, history)

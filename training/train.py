"""The one training loop, shared by every engine family.

    python -m training.train --engine transformer --preset cpu --data data/corpus --out runs/transformer-cpu

An engine family plugs in through a `TrainTask` (training/tasks/<family>.py: model builder, loss,
metric summary, datasets); the loop does the rest: Adam (2e-4 by reference), validation every 300 steps, a checkpoint every 1,000 steps
when validation improved (atomic; `best/` and `last/` kept, `last/` with the optimizer state for
--resume), metrics to CSV and a PNG plot, bf16 autocast on CUDA, DistributedDataParallel under
torchrun (rank 0 writes) or --data-parallel (the reference's DataParallel), progress bars.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from model import checkpoint as ckpt

from .data import AUGMENTATIONS, Augment
from .tasks import FAMILIES, TrainTask, add_sums, train_task

log = logging.getLogger("training.train")


# ---- helpers --------------------------------------------------------------------------------
def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors, meta = {}, {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta[f"{pid}.{k}"] = v
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"scalars": json.dumps(meta)})
    os.replace(tmp, path)


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        scalars = json.loads(f.metadata().get("scalars", "{}"))
    tensors = load_file(str(path))
    sd = opt.state_dict()
    state = {}
    for key, v in list(tensors.items()) + list(scalars.items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = torch.tensor(v) if not torch.is_tensor(v) else v
    sd["state"] = state
    opt.load_state_dict(sd)


def plot_metrics(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("validation", "o-")):
        r = [x for x in rows if x["split"] == split]
        if not r:
            continue
        steps = [int(x["step"]) for x in r]
        axes[0].plot(steps, [float(x["loss"]) for x in r], style, label=split, markersize=3)
        axes[1].plot(steps, [float(x["accuracy"]) for x in r], style, label=split, markersize=3)
    axes[0].set_title("cross-entropy"), axes[1].set_title("token accuracy")
    for a in axes:
        a.set_xlabel("step"), a.legend(), a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def evaluate(model: nn.Module, task: TrainTask, loader: DataLoader, device: torch.device, amp: bool) -> dict:
    model.eval()
    sums: dict[str, float] = {}
    for batch in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            add_sums(sums, task.loss(model, batch.to(device))[1])
    if dist.is_initialized():
        keys = sorted(sums)
        t = torch.tensor([sums[k] for k in keys], device=device, dtype=torch.float64)
        dist.all_reduce(t)
        sums = dict(zip(keys, t.tolist()))
    model.train()
    return task.summarize(sums)


def check_out(out: Path, args) -> None:
    """A run folder that already holds a run is continued (--resume) or replaced (--force), never mixed into;
    a shipped checkpoint folder is never a run folder.  Every rank decides (so all stop together), rank 0
    alone deletes, and all meet at a barrier before anyone looks at the folder again."""
    if ckpt.is_shipped(out):
        raise ValueError(f"--out {out} is inside the shipped checkpoints; train into runs/ and convert the result "
                         "with `python -m model.checkpoint convert` once it is measured better")
    holds_run = out.exists() and any(out.iterdir()) and not args.resume
    if holds_run and not args.force:
        raise ValueError(f"--out {out} already holds a run; pass --resume to continue it or --force to replace it")
    if dist.is_initialized():
        dist.barrier()  # every rank has looked before rank 0 deletes
    if holds_run and is_main():
        shutil.rmtree(out)
    if dist.is_initialized():
        dist.barrier()


def lr_at(step: int, args) -> float:
    """Constant (the reference), with optional linear warm-up and cosine decay to --min-lr."""
    if args.warmup and step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.decay_steps:
        t = min(1.0, (step - args.warmup) / max(1, args.decay_steps - args.warmup))
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * t))
    return args.lr


# ---- the loop -------------------------------------------------------------------------------
def train(args) -> dict:
    ddp = "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ddp:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        local = int(os.environ["LOCAL_RANK"])
        device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank = dist.get_rank() if ddp else 0
    world = dist.get_world_size() if ddp else 1
    torch.manual_seed(args.seed + rank)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    # bf16 autocast: on by default on CUDA; on CPU only with --bf16 (12 x 512, batch 4 x 512 on 2 cores: 828
    # tokens/s against 473 in fp32); the weights and the optimizer stay fp32 either way
    amp = (device.type == "cuda" and not args.no_amp) or (device.type == "cpu" and args.bf16)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    out = Path(args.out)
    check_out(out, args)
    task: TrainTask = train_task(args.engine, args)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
    model = task.build(task.config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, epoch, best, tokens_seen, elapsed_before = 0, 0, math.inf, 0, 0.0
    last_dir, best_dir = out / "last", out / "best"
    if args.resume and (last_dir / ckpt.CONFIG_NAME).exists():
        state, conf = ckpt.load_checkpoint(last_dir)
        model.load_state_dict(state)
        if (last_dir / "optimizer.safetensors").exists():
            load_optimizer(opt, last_dir / "optimizer.safetensors")
        for g in opt.param_groups:
            g["lr"] = args.lr
        t = conf["meta"]["train"]
        step, epoch, best = t["step"], t["epoch"], t["best_val_loss"]
        tokens_seen, elapsed_before = t.get("tokens_seen", 0), t.get("train_seconds", 0.0)
        if is_main():
            log.info("resumed from %s at step %d (best validation loss %.4f)", last_dir, step, best)
    elif args.init and not args.resume:
        state, _ = ckpt.load_checkpoint(args.init)
        model.load_state_dict(state)
    n_params = sum(p.numel() for p in model.parameters())
    if ddp:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    elif args.data_parallel and torch.cuda.device_count() > 1:
        model = nn.DataParallel(model)

    sampler = DistributedSampler(task.train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed) \
        if ddp else None
    per_rank_batch = max(1, args.batch // world)
    train_loader = DataLoader(task.train_set, batch_size=per_rank_batch, shuffle=sampler is None,
                              sampler=sampler, num_workers=args.workers, drop_last=True,
                              generator=torch.Generator().manual_seed(args.seed + epoch))
    val_sampler = DistributedSampler(task.val_set, num_replicas=world, rank=rank, shuffle=False) if ddp else None
    val_loader = DataLoader(task.val_set, batch_size=per_rank_batch, sampler=val_sampler, num_workers=0)
    csv_path = out / "metrics.csv"
    fields = None

    def write_row(row: dict) -> None:
        nonlocal fields
        if not is_main():
            return
        new = not csv_path.exists()
        if fields is None:
            fields = list(row)
            if not new:
                fields = next(csv.reader(csv_path.open()))
        with csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def save(directory: Path, val: dict, with_optimizer: bool) -> None:
        if not is_main():
            return
        meta = {"train": {"step": step, "epoch": epoch, "best_val_loss": best, "tokens_seen": tokens_seen,
                          "train_seconds": elapsed_before + (time.time() - t_start), "lr": args.lr,
                          "batch": args.batch, "world_size": world, "data": str(args.data),
                          "preset": getattr(args, "preset", None), "device": str(device), "amp": amp,
                          "augment": getattr(args, "augment", "")},
                "validation": val, "n_params": n_params}
        config = {"engine": task.engine, "model": asdict(task.config), "meta": meta}
        ckpt.save_checkpoint(directory, task.state_for_checkpoint(unwrap(model)), config)
        if with_optimizer:
            save_optimizer(opt, directory / "optimizer.safetensors")

    t_start = time.time()
    deadline = t_start + args.minutes * 60 if args.minutes else math.inf
    model.train()
    sums: dict[str, float] = {}
    pbar = tqdm(total=args.steps, initial=step, disable=not is_main() or args.quiet, desc=task.engine,
                dynamic_ncols=True)
    last_val: dict = {}
    stop = False
    while not stop:
        task.train_set.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in train_loader:
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, s = task.loss(model, batch)
            if isinstance(model, nn.DataParallel):
                loss = loss.mean()
            lr = lr_at(step, args)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            step += 1
            tokens_seen += batch.numel() * world
            add_sums(sums, s)
            pbar.update(1)
            if step % args.log_every == 0:
                m = task.summarize(sums)
                sums = {}
                pbar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}")
                write_row({"step": step, "split": "train", **m, "lr": lr, "tokens_seen": tokens_seen,
                           "elapsed_s": round(elapsed_before + time.time() - t_start, 1)})
            final = step >= args.steps or time.time() >= deadline
            if step % args.eval_every == 0 or final:
                last_val = evaluate(model, task, val_loader, device, amp)
                write_row({"step": step, "split": "validation", **last_val, "tokens_seen": tokens_seen,
                           "elapsed_s": round(elapsed_before + time.time() - t_start, 1)})
                if is_main():
                    log.info("step %d validation loss %.4f accuracy %.4f", step, last_val["loss"],
                             last_val["accuracy"])
                improved = last_val["loss"] < best
                if improved:
                    best = last_val["loss"]
                if improved and (step % args.ckpt_every == 0 or final or args.ckpt_every <= args.eval_every):
                    save(best_dir, last_val, with_optimizer=False)
            if step % args.ckpt_every == 0 or final:
                save(last_dir, last_val, with_optimizer=True)
                if is_main():
                    plot_metrics(csv_path, out / "curves.png")
            if final:
                stop = True
                break
        else:
            epoch += 1
    pbar.close()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return {"step": step, "best_val_loss": best, "validation": last_val, "tokens_seen": tokens_seen}


def _augmentations(text: str) -> str:
    """The --augment value, checked (training.data.Augment.parse), in its canonical order."""
    try:
        kinds = Augment.parse(text).kinds
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return ",".join(k for k in AUGMENTATIONS if k in kinds)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="transformer", choices=sorted(FAMILIES))
    p.add_argument("--preset", default="cpu")
    p.add_argument("--data", default="data/corpus", help="corpus folder (python -m training.corpus build)")
    p.add_argument("--out", required=True, help="run folder: metrics.csv, curves.png, best/, last/")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=0, help="stop (and checkpoint) after this many minutes")
    p.add_argument("--batch", type=int, default=64, help="global batch size (split across ranks)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (0 = none)")
    p.add_argument("--decay-steps", type=int, default=0, help="cosine decay to --min-lr over this many steps (0 = constant)")
    p.add_argument("--min-lr", type=float, default=2e-5)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0 = off)")
    p.add_argument("--context", type=int, default=0, help="override the preset's context length")
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--val-windows", type=int, default=256)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--force", action="store_true", help="delete what OUT holds and start afresh")
    p.add_argument("--init", default=None, help="start from these weights (a checkpoint folder)")
    p.add_argument("--data-parallel", action="store_true", help="torch.nn.DataParallel over local GPUs")
    p.add_argument("--device", default=None)
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU too (fp32 weights and optimizer)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default="", type=_augmentations, metavar="KINDS",
                   help=f"transformer: augment training windows on the fly, comma-separated from "
                        f"{','.join(AUGMENTATIONS)} (default: none); seeded by --seed, the epoch and the window")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = parser()
    args = p.parse_args(argv)
    if args.augment and args.engine != "transformer":
        p.error(f"--augment applies to the transformer only (not {args.engine})")
    try:
        result = train(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if is_main():
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Why label-word training does or does not learn on a decoder: cross-entropy alone, two demultiplexer placements.

For each placement (``--demux_after last_layer final_norm``) the same adapter is trained on the same cached layer-K
states of a frozen decoder with cross-entropy through its frozen label-word rows (no InfoNCE, no orthogonality), and
every epoch prints what the issue asks to see: training accuracy and gold margin, the gradient norm that reaches the
demultiplexer's up-projection (U's last linear layer), and the restored read state's scale against the teacher's and
against the final norm's input.

    python examples/decoder_learnability.py --model smollm2 --train 480 --epochs 4 --k 15 --n 2

Writes one JSON line per epoch and placement to ``--out`` (default: stdout only).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import revmux
from revmux import assets
from revmux.train.cache import CachedExamples, PrefixCache, feature_statistics
from revmux.train.data import get_task, load_task
from revmux.train.diagnostics import margins
from revmux.train.heads import head_for
from revmux.loading import load_model, resolve_model_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--train", type=int, default=480)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max_length", type=int, default=96)
    p.add_argument("--demux_after", nargs="+", default=["last_layer", "final_norm"])
    p.add_argument("--chat_template", action="store_true")
    p.add_argument("--standardize", action="store_true", help="RevMuxConfig(standardize=True), calibrated on train")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(2)

    task = get_task("mr")
    train = load_task("mr", assets.fetch_mr())["train"]
    random.Random(0).shuffle(train)
    train = train[:args.train]
    path = resolve_model_path(args.model)
    for placement in args.demux_after:
        torch.manual_seed(0)
        base, tokenizer = load_model(path, "decoder", 2, classifier=False)
        head = head_for(base, tokenizer, task, args.max_length, chat_template=args.chat_template)
        head.calibrate(base, train[:64])
        base.requires_grad_(False)
        model = revmux.get_revmux_model(base, revmux.RevMuxConfig(compose_size=args.n, combine_first=args.k,
                                                                  demux_after=placement,
                                                                  standardize=args.standardize))
        if args.standardize:
            model.base_model.calibrate(*feature_statistics(model, head, train))
        cache = PrefixCache.build(model, head, train, Path(assets.cache_root()), progress=False)
        data = CachedExamples(train, cache, head)
        tuner = model.base_model
        up = tuner.model.get_submodule(f"{tuner.peft_config['default'].target_modules[0]}.{args.k}") \
            .revmux_mux["default"].up[-2]  # U's last Linear (the Dropout after it has no weight)
        params = [q for q in model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
        norm = base.model.norm
        for epoch in range(1, args.epochs + 1):
            order = list(range(len(data)))
            random.Random(epoch).shuffle(order)
            sums = dict.fromkeys(("ce", "correct", "margin", "grad_up", "restored_norm", "teacher_norm"), 0.0)
            steps, seen, started = 0, 0, time.perf_counter()
            model.train()
            for start in range(0, len(order), args.batch_size):
                batch = data.collate([data[i] for i in order[start:start + args.batch_size]])
                states, teacher = batch.pop("layer_k_states"), batch.pop("teacher_readout")  # (B, T, d), (B, d)
                batch.pop("teacher_logits")
                with tuner.replaying(states), tuner.recording() as recording:
                    logits = head.logits(model, batch)  # (B, C)
                loss = F.cross_entropy(logits, batch["labels"])  # cross-entropy alone
                optimizer.zero_grad()
                loss.backward()
                rows = torch.arange(len(logits))
                restored = recording.restored[rows, head.positions(batch)].detach()  # (B, d)
                sums["ce"] += float(loss)
                sums["correct"] += float((logits.argmax(-1) == batch["labels"]).sum())
                sums["margin"] += float(margins(logits.detach(), batch["labels"]).sum())
                sums["grad_up"] += float(up.weight.grad.norm())
                sums["restored_norm"] += float(restored.norm(dim=-1).sum())
                sums["teacher_norm"] += float(teacher.norm(dim=-1).sum())
                optimizer.step()
                steps, seen = steps + 1, seen + len(logits)
            row = {"demux_after": placement, "standardize": args.standardize, "epoch": epoch, "steps": steps, "ce": sums["ce"] / steps,
                   "train_accuracy": 100 * sums["correct"] / seen, "margin": sums["margin"] / seen,
                   "grad_up": sums["grad_up"] / steps, "restored_norm": sums["restored_norm"] / seen,
                   "teacher_norm": sums["teacher_norm"] / seen,
                   "norm_weight_rms": float(norm.weight.pow(2).mean().sqrt()),
                   "seconds": round(time.perf_counter() - started, 1)}
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

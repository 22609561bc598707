"""Does a composite carry each of its instances' labels where the head reads? A linear probe on the multiplexed
read state of an untrained adapter, beside the same probe on the un-multiplexed (teacher's) read state.

For a frozen decoder with label words (cached layer-K states, K = --k, N = --n, random groups), the composite's state
at the shared read position (after the final norm: ``demux_after="final_norm"``) is collected for every group, and a
logistic regression (three weight decays, the best reported) predicts the label of the instance in each slot from
it; the teacher's own read states are probed the same way. Train on the first 2/3 of the groups, score on the rest.

    python examples/composite_probe.py --train 960 --k 15 --n 2
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
import torch.nn.functional as F

import revmux
from revmux import assets
from revmux.train.cache import CachedExamples, PrefixCache
from revmux.train.data import get_task, load_task
from revmux.train.heads import head_for
from revmux.loading import load_model, resolve_model_path


def probe(x: torch.Tensor, y: torch.Tensor, split: int) -> float:
    """Best held-out accuracy (%) of an L2-regularised logistic regression on standardised features."""
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    x = (x - mean) / std
    best = 0.0
    for decay in (1e-3, 1e-2, 1e-1):
        w = torch.zeros(x.shape[1], 2, requires_grad=True)
        b = torch.zeros(2, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=200)

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(x[:split] @ w + b, y[:split]) + decay * (w ** 2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        best = max(best, float(((x[split:] @ w + b).argmax(1) == y[split:]).float().mean()) * 100)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--train", type=int, default=960)
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--max_length", type=int, default=96)
    p.add_argument("--standardize", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    task = get_task("mr")
    examples = load_task("mr", assets.fetch_mr())["train"]
    random.Random(0).shuffle(examples)
    examples = examples[:args.train - args.train % args.n]
    base, tokenizer = load_model(resolve_model_path(args.model), "decoder", 2, classifier=False)
    head = head_for(base, tokenizer, task, args.max_length)
    base.requires_grad_(False)
    model = revmux.get_revmux_model(base, revmux.RevMuxConfig(compose_size=args.n, combine_first=args.k,
                                                              demux_after="final_norm", standardize=args.standardize))
    if args.standardize:
        from revmux.train.cache import feature_statistics

        model.base_model.calibrate(*feature_statistics(model, head, examples))
    model.eval()
    data = CachedExamples(examples, PrefixCache.build(model, head, examples, Path(assets.cache_root()),
                                                      progress=False), head)
    tuner = model.base_model
    norm = tuner.model.get_submodule(tuner._specs["default"].final_norm)
    composites, teacher, labels = [], [], []
    captured = {}
    handle = norm.register_forward_pre_hook(lambda module, inputs: captured.update(composite=inputs[0]))
    with torch.no_grad():
        for start in range(0, len(data), 32):
            batch = data.collate([data[i] for i in range(start, min(start + 32, len(data)))])
            states = batch.pop("layer_k_states")
            teacher.append(batch.pop("teacher_readout"))  # (B, d) after the final norm
            batch.pop("teacher_logits")
            with tuner.replaying(states), tuner.recording():
                head.logits(model, batch)
            composite = norm(captured["composite"])[:, -1]  # (G, d): right-aligned, every instance read last
            composites.append(composite)
            labels.append(batch["labels"].view(-1, args.n))  # (G, N)
    handle.remove()
    x, t, y = torch.cat(composites), torch.cat(teacher), torch.cat(labels)  # (G, d), (B, d), (G, N)
    split = 2 * len(x) // 3
    print(f"{len(x)} groups of {args.n}, K={args.k}, untrained adapter, standardize={args.standardize}")
    print(f"teacher read state -> its own label: {probe(t, y.reshape(-1), split * args.n):.1f}")
    for slot in range(args.n):
        print(f"composite read state -> slot {slot}'s label: {probe(x, y[:, slot], split):.1f}")


if __name__ == "__main__":
    main()

"""What does a composite keep of EACH of its instances' labels after the frozen upper layers, at initialisation?

For random pairs of MR training prompts (N = --n instances a group), the composite's state where the head reads
(decoders: after the final norm at the shared last position, right-aligned; encoders: the last layer's [CLS]) is
collected for every group, and a logistic regression (five-fold, the best of three weight decays) predicts the label
of the instance in each slot from it; the teacher's own read states are probed the same way. Shuffled labels give
about 50 +- 3.

Variants (h_n: slot n's layer-K state; mu: their mean over real tokens; PCA of the layer-K states):
  revmux    revmux's own untrained multiplexer, built with --composite and calibrated as ``revmux train`` does
            (--standardize statistics; for 'basis' the mean and principal directions)
  C         the average (h_0 + ... + h_{N-1}) / N
  Do        mu + mean_n R_n (h_n - mu), R_n random orthogonal (a superposition)
  G2        mu + sum_n P_n (h_n - mu), P_n onto principal directions n, n+N, ...: each slot in place (what
            composite='basis' starts as, in the raw space)
  G3        raw feature blocks: features [n d/N, (n+1) d/N) of h_n (what composite='blocks' writes into)
  G4        like G2 with a random orthogonal basis instead of the principal one
Only how the composite is built is replaced (the multiplexer's ``instances``/``combine``); revmux's grouping,
right-alignment, masks, frozen layers, final norm and read position do the rest. Absent instances (padding) count as
mu in C, Do, G2 and G4.

    python examples/composite_probe.py --model smollm2 --k 15 --n 2 --standardize --composite basis --variants revmux,G2
    python examples/composite_probe.py --model runs/minilm/teacher --k 3 --n 2 --max_length 64 --variants revmux,C,G2
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
from revmux.loading import load_model, model_family, resolve_model_path
from revmux.train.cache import CachedExamples, PrefixCache, calibration_states, feature_statistics
from revmux.train.data import get_task, load_task
from revmux.train.heads import head_for
from revmux.tuner.mux import slot_order

DECAYS = (1e-3, 1e-2, 1e-1)


def fit_eval(xtr, ytr, xte, yte, decay) -> float:
    """Held-out accuracy (%) of an L2-regularised logistic regression on standardised features."""
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    w = torch.zeros(xtr.shape[1], 2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, ytr) + decay * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((xte @ w + b).argmax(1) == yte).float().mean()) * 100


def probe_cv(x: torch.Tensor, y: torch.Tensor, folds: int = 5) -> float:
    """k-fold accuracy (%), every row scored once, the weight decay chosen by the mean over folds."""
    index = torch.arange(len(x))
    best = 0.0
    for decay in DECAYS:
        correct = 0.0
        for fold in range(folds):
            test, train = index[fold::folds], index[index % folds != fold]
            correct += fit_eval(x[train], y[train], x[test], y[test], decay) * len(test) / 100
        best = max(best, 100 * correct / len(x))
    return best


class FixedComposite:
    """A fixed composite in place of the multiplexer's ``instances``/``combine`` (see the module docstring)."""

    def __init__(self, name: str, n: int, mu: torch.Tensor, principal: torch.Tensor, seed: int = 0):
        self.name, self.n, self.mu = name, n, mu
        d = len(mu)
        g = torch.Generator().manual_seed(seed)
        self.rotations = [torch.linalg.qr(torch.randn(d, d, generator=g))[0] for _ in range(n)]
        order = slot_order(d, n)
        basis = {"G2": principal, "G4": self.rotations[0]}.get(name)
        self.slots = None if basis is None else basis[:, order].view(d, n, -1).unbind(1)  # N x (d, d/N)

    def instances(self, hidden):
        return hidden  # (G*N, T, d): combine does everything

    def combine(self, x):
        x = x.view(-1, self.n, *x.shape[1:])  # (G, N, T, d)
        present = (x != 0).any(-1, keepdim=True)  # (G, N, T, 1)
        if self.name == "G3":
            c = torch.cat([x[:, i].chunk(self.n, -1)[i] for i in range(self.n)], -1)  # (G, T, d)
        else:
            centred = torch.where(present, x - self.mu, torch.zeros_like(x))  # (G, N, T, d), absent -> mu
            if self.name == "C":
                c = self.mu + centred.mean(1)
            elif self.name == "Do":
                c = self.mu + sum(centred[:, i] @ self.rotations[i].T for i in range(self.n)) / self.n
            elif self.name in ("G2", "G4"):
                c = self.mu + sum(centred[:, i] @ q @ q.T for i, q in enumerate(self.slots))
            else:
                raise ValueError(f"unknown variant {self.name!r}")
        return torch.where(present.any(1), c, torch.zeros_like(c))  # (G, T, d): no real instance -> 0 (masked)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2", help="smollm2, minilm, or a model folder (e.g. a trained teacher)")
    p.add_argument("--train", type=int, default=960, help="MR training prompts (train / N groups)")
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--max_length", type=int, default=96)
    p.add_argument("--standardize", action="store_true", help="the revmux variant standardises (decoders' recipe)")
    p.add_argument("--composite", default="blocks", choices=("blocks", "basis"), help="the revmux variant's")
    p.add_argument("--variants", default="revmux,C,Do,G2")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    task = get_task("mr")
    examples = load_task("mr", assets.fetch_mr())["train"]
    random.Random(0).shuffle(examples)
    examples = examples[:args.train - args.train % args.n]
    path = resolve_model_path(args.model)
    family = model_family(path)
    if family == "decoder":
        base, tokenizer = load_model(path, "decoder", 2, classifier=False)
    else:
        base, tokenizer = load_model(path, family, 2)
    head = head_for(base, tokenizer, task, args.max_length)
    base.requires_grad_(False)
    config = revmux.RevMuxConfig(compose_size=args.n, combine_first=args.k, standardize=args.standardize,
                                 composite=args.composite, dropout=0.0)
    model = revmux.get_revmux_model(base, config).eval()
    tuner = model.base_model
    spec = tuner._specs["default"]
    states = calibration_states(model, head, examples)  # as revmux train calibrates
    if args.standardize:
        tuner.calibrate(*feature_statistics(model, head, examples, states=states))
    if args.composite == "basis":
        tuner.calibrate_basis(states[0])
    cache = PrefixCache.build(model, head, examples, Path(assets.cache_root()), progress=False)
    data = CachedExamples(examples, cache, head)
    x = states[0].double()
    mu = x.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov((x - mu).T))
    principal = vectors[:, values.argsort(descending=True)].float()  # (d, d) raw-space principal directions
    mu = mu.float()

    read_at = tuner.model.get_submodule(spec.final_norm) if spec.final_norm else None
    captured = {}
    if read_at is not None:  # decoders: the final norm's output on the composites, at the shared last position
        # (prepended: revmux's own hook on the final norm replaces its output with the restored instances)
        handle = read_at.register_forward_hook(lambda m, a, out: captured.update(read=out[:, -1]), prepend=True)
    else:  # encoders: the last layer's output at [CLS]
        stack = tuner.model.get_submodule(config.target_modules[0])
        handle = stack[-1].base_layer.register_forward_hook(
            lambda m, a, out: captured.update(read=(out[0] if isinstance(out, tuple) else out)[:, 0]))

    labels = torch.tensor([e.label for e in examples]).view(-1, args.n)  # (G, N)
    results = {"args": vars(args), "teacher": probe_cv(cache.teacher.float(), labels.reshape(-1)), "variants": {}}
    print(f"{len(labels)} groups of {args.n}, {family}, K={args.k}; teacher read state: {results['teacher']:.1f} "
          f"(5-fold) [{time.time() - started:.0f} s]", flush=True)
    multiplexer = spec.multiplexer
    for name in [v for v in args.variants.split(",") if v]:
        multiplexer.__dict__.pop("instances", None)
        multiplexer.__dict__.pop("combine", None)
        if name != "revmux":
            fixed = FixedComposite(name, args.n, mu, principal)
            multiplexer.instances, multiplexer.combine = fixed.instances, fixed.combine
        reads = []
        with torch.no_grad():
            for start in range(0, len(data), 32):
                batch = data.collate([data[i] for i in range(start, min(start + 32, len(data)))])
                layer_k = batch.pop("layer_k_states")
                for key in ("teacher_readout", "teacher_logits"):
                    batch.pop(key)
                with tuner.replaying(layer_k):
                    head.logits(model, batch)
                reads.append(captured["read"].float())  # (G, d)
        reads = torch.cat(reads)
        row = [probe_cv(reads, labels[:, slot]) for slot in range(args.n)]
        label = f"revmux ({args.composite}{', standardised' if args.standardize else ''})" if name == "revmux" else name
        results["variants"][label] = row
        print(f"{label:32s} " + " / ".join(f"{a:.1f}" for a in row) + f"   [{time.time() - started:.0f} s]", flush=True)
    handle.remove()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

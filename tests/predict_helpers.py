"""Tiny saved adapters and tables for the own-data tests (``test_tables.py``, ``test_predict.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import revmux
from revmux.serve.serving import ServingInfo
from revmux.tables import Columns, make_task, save_task
from revmux.tiny import CLI_ALIASES, TINY_MODELS, WORDS, tiny_family


def make_adapter(folder: Path, labels=("billing", "bug", "praise"), pair: bool = False, alias: str = "tiny-bert",
                 max_length: int = 24, seed: int = 1, identity_above_k: bool = False) -> Path:
    """A saved teacher and a RevMUX adapter (N=2, K=2) on it, with the metadata ``revmux train`` writes.

    ``identity_above_k`` (tiny-llama): the teacher's layers after K add nothing to the residual stream and the adapter
    demultiplexes after the last layer, so each instance's prediction is the same whatever shares its composite.
    """
    from revmux.loading import load_model

    family = tiny_family(alias)
    base, tokenizer = load_model(alias, family, len(labels))
    if identity_above_k:
        with torch.no_grad():
            for layer in base.model.layers[2:]:  # h + attention(...) + mlp(...) with both outputs zero: h
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
    teacher, adapter = folder / "teacher", folder / "adapter"
    base.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    task = make_task("tickets", labels, pair, label_words=["good", "bad", "fine", "dull", "funny"][:len(labels)]
                     if family != "encoder" else None)
    torch.manual_seed(seed)
    # identity_above_k needs blocks: a basis adapter restores each slot through its own P_n and U_n, so even over an
    # exact backbone an instance's answer depends on the slot it lands in
    config = revmux.RevMuxConfig(task_type=TINY_MODELS[CLI_ALIASES[alias]][1], compose_size=2, combine_first=2,
                                 **({"demux_after": "last_layer", "composite": "blocks"} if identity_above_k else {}))
    muxed = revmux.get_revmux_model(base, config)
    with torch.no_grad():  # a trained-looking adapter: the muxed predictions differ from the teacher's
        for name, p in muxed.named_parameters():
            if "revmux" in name:
                p.add_(0.05 * torch.randn_like(p))
    muxed.save_pretrained(adapter, save_embedding_layers=False)
    tokenizer.save_pretrained(adapter)
    ServingInfo(task=task.name, label_names=tuple(labels), max_length=max_length, family=family,
                teacher=str(teacher.resolve()), model_class=type(base).__name__,
                calibration=[0.0] * len(labels) if family == "decoder" else None).save(adapter)
    save_task(adapter, task, Columns(text="text", text_pair="context" if pair else None, label="label"))
    return adapter


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 1 to 20 words from the tiny vocabulary (varied lengths, so sorting by length matters)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 21, (n,), generator=g).tolist()
    words = [w for w in WORDS if w.isalpha()]
    picks = torch.randint(0, len(words), (sum(lengths),), generator=g).tolist()
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(words[i] for i in picks[at:at + length]))
        at += length
    return out


def write_table(path: Path, rows: list[dict]) -> Path:
    """``rows`` as CSV, TSV or JSON Lines (by suffix); CSV quotes a text with a comma, a quote or a line break."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".jsonl", ".json"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        if path.suffix == ".tsv":
            f.write("\t".join(rows[0]) + "\n")
            for r in rows:
                f.write("\t".join(str(v) for v in r.values()) + "\n")
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path

"""Cached-prefix training: the frozen backbone's work on each training example, computed once.

With the backbone frozen, the layer-K states of an instance (what enters the multiplexer) and the teacher's last
hidden state at the head's read position (what InfoNCE compares) never change. ``PrefixCache.build`` runs the
un-multiplexed backbone once over the training examples and stores both; each training step then runs only
mux -> layers [K, L) on composites -> demux -> head (``RevMuxModel.replaying``).

Exactness: padded positions enter the multiplexer as zeros (``RevMuxLayer._without_padding``), so an example's
layer-K states do not depend on how far its batch is padded: the cache stores each example's real positions (zeros
after them, up to the longest example) and any batch reads exactly what recomputing would give. The caching pass
batches examples of similar length.

The cache is keyed by the model's weights and config, the tokenized examples (data, tokenizer, prompt, max length),
K and the storage dtype; it lives under ``<cache_dir>/prefix/<key>/`` and is reused across runs and mux types.
States are memory-mapped from disk when they exceed the memory budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from revmux.train.data import Example
from revmux.train.fake_quant import is_fake_int8
from revmux.train.heads import ClassificationHead, revmux_tuner, unwrap

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FORMAT_VERSION = 3  # 2: padded positions stored as zeros; 3: teacher readouts and class logits in teacher.safetensors
TEACHER_FILE = "teacher.safetensors"


def model_fingerprint(model) -> str:
    """A hash of the model's class, attention implementation and weights (names, shapes and a strided sample of every
    tensor). The config's bookkeeping (its path, versions) is left out, so a teacher saved and loaded again keeps its
    cache; so are the adapters, a trained head copy included (``train_head``: the teacher's head is what the cache
    reads). A model under ``fake_int8`` computes other states, so it has another fingerprint."""
    hf = unwrap(model)
    h = hashlib.sha256(type(hf).__name__.encode())
    if is_fake_int8(hf):  # states and readouts as int8 serving computes them (revmux.train.fake_quant)
        h.update(b"fake_int8")
    config = hf.config.get_text_config()
    for key in ("_attn_implementation", "hidden_act", "layer_norm_eps", "rms_norm_eps", "rope_theta", "rope_scaling",
                "position_embedding_type"):  # what changes a forward besides the weights
        h.update(f"{key}={getattr(config, key, None)}".encode())
    for name, p in hf.named_parameters():
        if "revmux_" in name or ".modules_to_save." in name:  # adapter weights; a train_head copy (PEFT's wrapper)
            continue
        name = name.replace(".original_module.", ".")  # the wrapped head is the teacher's: the same cache
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def tokens_fingerprint(token_ids: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256()
    for ids in token_ids:
        h.update(len(ids).to_bytes(4, "little"))
        h.update(b"".join(int(i).to_bytes(4, "little", signed=True) for i in ids))
    return h.hexdigest()


@dataclass
class PrefixCache:
    """Layer-K states and teacher readouts of a list of examples, row i for example i."""

    states: torch.Tensor  # (n, T_c, d), storage dtype; in memory or memory-mapped
    teacher: torch.Tensor  # (n, d) float32: the teacher's last hidden state at the head's read position
    teacher_logits: torch.Tensor  # (n, C) float32: the teacher's class logits, uncalibrated (``head.uncalibrated``)
    path: Path
    memory_mapped: bool
    token_ids: list  # the examples' token ids (what the key hashes; the dataset buckets by their lengths)

    @property
    def length(self) -> int:
        return self.states.shape[1]

    @property
    def size_mb(self) -> float:
        return (self.states.numel() * self.states.element_size() + self.teacher.numel() * 4) / 2**20

    def take(self, indices: Sequence[int], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """((B, length, d) float32 layer-K states, (B, d) teacher readouts, (B, C) teacher class logits) of the
        examples ``indices``."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return self.states[index, :length].float(), self.teacher[index], self.teacher_logits[index]

    @classmethod
    def key(cls, model, token_ids: Sequence[Sequence[int]], storage: str, combine_first: int | None = None) -> str:
        """The cache folder's name: model, tokenized data, K (default: the active adapter's) and storage dtype."""
        tuner = revmux_tuner(model)
        config = next(iter(tuner.peft_config.values()))
        k = config.combine_first if combine_first is None else combine_first
        parts = {"version": FORMAT_VERSION, "model": model_fingerprint(model), "data": tokens_fingerprint(token_ids),
                 "combine_first": k, "stacks": list(config.target_modules), "storage": storage}
        if config.demux_after == "final_norm":  # the teacher's readouts are the final norm's output
            parts["readout"] = "final_norm"
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]

    @classmethod
    def build(cls, model, head: ClassificationHead, examples: Sequence[Example], cache_dir: str | os.PathLike,
              storage: str = "float32", memory_budget_mb: float = 4096, batch_size: int = 64,
              progress: bool = True) -> "PrefixCache":
        """Load the cache of ``examples`` for this model and K, computing it first if it is not on disk.

        Args:
            model: a RevMUX PeftModel (its active adapter gives K); the backbone runs un-multiplexed, in eval mode.
            head: the family's head (tokenization, prompt, read positions).
            storage: "float32", "float16" or "bfloat16" for the states.
            memory_budget_mb: states larger than this stay memory-mapped on disk.

        Raises:
            ValueError: for an unknown storage dtype or a model without a RevMUX adapter.
        """
        token_ids, folders, _ = cls._on_disk(model, head, examples, cache_dir, None, storage, batch_size, progress)
        (folder,) = folders.values()
        meta = json.loads((folder / "meta.json").read_text())
        n, length, d = meta["shape"]
        dtype = STORAGE_DTYPES[meta["storage"]]
        states = torch.from_file(str(folder / "states.bin"), shared=False, size=n * length * d, dtype=dtype)
        states = states.view(n, length, d)  # (n, T_c, d)
        size_mb = n * length * d * states.element_size() / 2**20
        mapped = size_mb > memory_budget_mb
        if not mapped:
            states = states.clone()  # read into memory once
        saved = load_file(str(folder / TEACHER_FILE))  # (n, d) readouts, (n, C) class logits, float32
        return cls(states, saved["teacher"], saved["logits"], folder, mapped, token_ids)

    @classmethod
    def prepare(cls, model, head: ClassificationHead, examples: Sequence[Example], cache_dir: str | os.PathLike,
                layers: Sequence[int], storage: str = "float32", batch_size: int = 64, progress: bool = True
                ) -> list[int]:
        """Compute the caches of ``examples`` at every K in ``layers`` that is not on disk yet, all in one pass of
        the backbone (the states entering each layer K are taken as they pass); ``build`` for an adapter at any of
        these K then loads its cache without running the backbone. Returns the K computed.

        Raises:
            ValueError: for an unknown storage dtype, a model without a RevMUX adapter, or a K outside its stack.
        """
        return cls._on_disk(model, head, examples, cache_dir, layers, storage, batch_size, progress)[2]

    @classmethod
    def _on_disk(cls, model, head, examples, cache_dir, layers, storage, batch_size, progress
                 ) -> tuple[list, dict[int, Path], list[int]]:
        """(token ids, {K: cache folder}, the K computed now): every K of ``layers`` (None: the active adapter's) on
        disk, the missing ones computed together in one pass."""
        if storage not in STORAGE_DTYPES:
            raise ValueError(f"Unknown cache storage dtype {storage!r}; choose one of {', '.join(STORAGE_DTYPES)}.")
        tuner = revmux_tuner(model)
        if tuner is None:
            raise ValueError("The prefix cache needs a RevMUX PeftModel (get_revmux_model(teacher, config)).")
        if layers is None:
            layers = [next(iter(tuner.peft_config.values())).combine_first]
        size = len(_muxed_stack(tuner))
        wrong = [k for k in layers if not 0 <= k < size]
        if wrong:
            raise ValueError(f"K = {wrong} outside the multiplexed stack's {size} layers (0 <= K < {size}).")
        token_ids = head.encode_lengths(examples)
        folders = {k: Path(cache_dir) / "prefix" / cls.key(model, token_ids, storage, combine_first=k)
                   for k in sorted(set(layers))}
        missing = {k: folder for k, folder in folders.items() if not (folder / "meta.json").is_file()}
        if missing:
            cls._compute(model, head, examples, token_ids, missing, storage, batch_size, progress)
        return token_ids, folders, sorted(missing)

    @staticmethod
    def _compute(model, head, examples, token_ids, folders: dict[int, Path], storage: str, batch_size: int,
                 progress: bool) -> None:
        """One pass of the un-multiplexed backbone over ``examples``; the states entering layer K of the multiplexed
        stack (zero at padding) go to ``folders[K]``, with the teacher's readouts and class logits."""
        tuner = revmux_tuner(model)
        hf = unwrap(model)
        length = max(len(ids) for ids in token_ids)
        d = hf.config.get_text_config().hidden_size
        n = len(examples)
        dtype = STORAGE_DTYPES[storage]
        stack = _muxed_stack(tuner)
        entering: dict[int, torch.Tensor] = {}  # K -> (b, T, d) of the current batch

        def keep(k: int):
            def hook(layer, args, kwargs):  # a RevMuxLayer: its first argument is the hidden states
                entering[k] = layer._named_arguments(args, kwargs)[0]
            return hook

        hooks = [stack[k].register_forward_pre_hook(keep(k), with_kwargs=True) for k in folders]
        tmps, states = {}, {}
        for k, folder in folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            tmps[k] = folder / f"states.bin.tmp{os.getpid()}"
            states[k] = torch.from_file(str(tmps[k]), shared=True, size=n * length * d, dtype=dtype).view(n, length, d)
        teacher = torch.empty(n, d)
        logits = torch.empty(n, len(head.task.label_names))
        order = sorted(range(n), key=lambda i: -len(token_ids[i]))  # similar lengths together: fewer pad tokens
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        megabytes = len(folders) * n * length * d * dtype.itemsize / 2**20
        bar = tqdm(total=n, desc=f"caching layer-K states at K={','.join(map(str, folders))} ({megabytes:.0f} MB)",
                   disable=not progress, unit="ex")
        try:
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    index = order[start:start + batch_size]
                    rows_of = torch.tensor(index)  # the batch's rows in the cache
                    batch = {k: v.to(device) for k, v in head.collate([examples[i] for i in index]).items()}
                    with tuner.unmultiplexed() as recording:
                        logits[rows_of] = head.uncalibrated(head.logits(model, batch)).float().cpu()
                    rows = torch.arange(len(index))
                    positions = head.positions(batch).cpu()
                    real = batch["attention_mask"].cpu()[..., None]  # (b, T, 1); the multiplexer sees zero padding
                    t = real.shape[1]
                    for k in folders:
                        states[k][rows_of, :t] = (entering[k].detach().cpu() * real).to(dtype)  # (b, t, d)
                    teacher[rows_of] = recording.teacher_hidden.detach().cpu().float()[rows, positions]
                    bar.update(len(index))
        finally:
            for hook in hooks:
                hook.remove()
            bar.close()
            model.train(was_training)
        del states
        meta = {"shape": [n, length, d], "storage": storage, "seconds": time.perf_counter() - started,
                "version": FORMAT_VERSION, "computed_with": sorted(folders)}
        for k, folder in folders.items():
            tmp_teacher = folder / f"{TEACHER_FILE}.tmp{os.getpid()}"  # replaced whole: never read half-written
            save_file({"teacher": teacher, "logits": logits}, str(tmp_teacher))
            os.replace(tmp_teacher, folder / TEACHER_FILE)
            os.replace(tmps[k], folder / "states.bin")
            tmp_meta = folder / f"meta.json.tmp{os.getpid()}"  # (launched processes may compute it together)
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp_meta, folder / "meta.json")  # written last: the cache is complete


def _muxed_stack(tuner):
    """The layer stack the adapter multiplexes (an encoder-decoder's encoder)."""
    return tuner.model.get_submodule(next(iter(tuner.peft_config.values())).target_modules[0])


class CachedExamples(torch.utils.data.Dataset):
    """Training examples with their cached prefix; items carry ``input_ids`` so the Trainer can bucket by length."""

    def __init__(self, examples: Sequence[Example], cache: PrefixCache, head: ClassificationHead):
        self.examples, self.cache, self.head = list(examples), cache, head
        self.token_ids = cache.token_ids  # tokenized once, by PrefixCache.build

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "input_ids": self.token_ids[i]}

    def collate(self, items: Sequence[dict]) -> dict:
        """The head's batch plus ``layer_k_states`` (B, T, d), ``teacher_readout`` (B, d) and ``teacher_logits``
        (B, C) from the cache."""
        index = [item["index"] for item in items]
        batch = self.head.collate([self.examples[i] for i in index])
        batch["layer_k_states"], batch["teacher_readout"], batch["teacher_logits"] = self.cache.take(
            index, batch["input_ids"].shape[1])
        return batch


@torch.no_grad()
def calibration_states(model, head: ClassificationHead, examples: Sequence[Example], max_examples: int = 512,
                       batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen backbone's layer-K states of real tokens, (tokens, d), and the teacher's states at the head's read
    positions, (examples, d), float32 on the CPU, over the first ``max_examples`` examples: what the adapter's
    statistics (``feature_statistics``) and its basis (``RevMuxModel.calibrate_basis``) are calibrated on."""
    tuner = revmux_tuner(model)
    device = next(model.parameters()).device
    inputs, outputs = [], []
    was_training = model.training
    model.eval()
    sample = list(examples)[:max_examples]
    for start in range(0, len(sample), batch_size):
        batch = {k: v.to(device) for k, v in head.collate(sample[start:start + batch_size]).items()}
        with tuner.unmultiplexed() as recording:
            head.logits(model, batch)
        real = batch["attention_mask"].bool()  # (B, T)
        inputs.append(recording.layer_k_states[real].float().cpu())  # (real tokens, d)
        rows = torch.arange(len(real), device=real.device)
        outputs.append(recording.teacher_hidden[rows, head.positions(batch).to(real.device)].float().cpu())  # (B, d)
    model.train(was_training)
    return torch.cat(inputs), torch.cat(outputs)


def feature_statistics(model, head: ClassificationHead, examples: Sequence[Example], max_examples: int = 512,
                       batch_size: int = 32, states: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, ...]:
    """Per-feature (d,) mean and std of the layer-K states (real tokens) and of the teacher's states at the head's
    read positions (``calibration_states``, or the given ``states``): what ``RevMuxModel.calibrate`` takes."""
    x, y = states if states is not None else calibration_states(model, head, examples, max_examples, batch_size)
    return x.mean(0), x.std(0).clamp_min(1e-5), y.mean(0), y.std(0).clamp_min(1e-5)

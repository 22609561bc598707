"""Architecture knowledge in one place: where the layer stacks live, which family a model is, what each layer does.

Layer stacks are found generically: an ``nn.ModuleList`` whose blocks are transformers'
``GradientCheckpointingLayer`` (every 5.x model) or are named in ``model._no_split_modules``. The first stack is
multiplexed at layer K; a second stack (the decoder of an encoder-decoder model) runs entirely on composites.

| family          | stacks (examples)                          | mux at          | demux after (default)           | head reads |
|-----------------|--------------------------------------------|-----------------|---------------------------------|------------|
| encoder         | bert.encoder.layer, distilbert.transformer | layer K         | the last layer                  | CLS        |
| decoder         | model.layers (LLaMA, Qwen2), transformer.h | layer K         | the final norm (model.norm, ln_f) | last token |
| encoder-decoder | encoder.block + decoder.block (T5)         | encoder block K | last decoder block              | decoder    |

``demux_after="last_layer"``: the final norm (if any) and the whole head run on the restored instances.
``demux_after="final_norm"`` (the paper's LLaMA placement, the decoders' default): the final norm runs on the
composites and the head reads the restored instances directly (``find_final_norm`` says which module that is). See
``sequence_classifier_reads`` for the positions the demultiplexer restores when only some are read.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Literal, Optional

from torch import nn

from .grouping import unknown_layer_arguments
from .mux import check_divisible

Family = Literal["encoder", "decoder", "encoder-decoder"]
# RevMuxConfig(composite="auto"): where the slots are written (mux.py), per family and N, chosen by measurement
# (docs/results.md, "Composites in the model's own basis"); "blocks" wherever nothing here says otherwise.
COMPOSITE_DEFAULTS: dict[str, dict[int, str]] = {"encoder": {}, "decoder": {2: "basis"}, "encoder-decoder": {}}


def default_composite(family: str, compose_size: int) -> str:
    """What ``composite="auto"`` resolves to for a family at N = ``compose_size``."""
    return COMPOSITE_DEFAULTS[family].get(compose_size, "blocks")
# What the layer does for one adapter: run untouched, multiplex its input, take the first of each group of its
# input (identical decoder inputs), or run on composites with shrunk arguments. ``demux`` marks the last layer.
RoleKind = Literal["pass", "mux", "collapse", "carry"]
# Which positions a head reads, so the demultiplexer can run only there (see ``read_positions``).
ReadMode = Literal["all", "first", "last_non_pad", "last_real"]

# Encoder sequence-classification heads that read the first token (pooler or classification head on [CLS]), by
# config.model_type. Decoder heads are recognised from their class (``reads_last_non_pad_token``). Anything else
# restores every position (demux_positions="auto" falls back to "all"): a mean-pooling head must never see zero rows.
CLS_HEAD_MODELS = frozenset({
    "bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert", "deberta", "deberta-v2", "camembert",
    "mpnet", "ernie", "nezha", "megatron-bert", "roberta-prelayernorm", "xlm-roberta-xl",
})


@functools.lru_cache(maxsize=None)
def reads_last_non_pad_token(model_class: type) -> bool:
    """Whether a ``*ForSequenceClassification`` class pools the rightmost token that is not ``pad_token_id``.

    That is transformers' rule for decoder classifiers: ``GenericForSequenceClassification`` (LLaMA, Qwen2, Mistral,
    Gemma, Phi3, ...) and every hand-written classifier that computes ``last_non_pad_token`` (GPT-2, GPT-NeoX, OPT,
    Falcon, BLOOM, MPT, ...). Read from the class itself, so a new family needs no list entry: the ``forward`` that
    runs decides, following ``super().forward(...)`` delegation (Gemma3, Qwen3.5); a subclass that pools its own way
    is not mistaken for its parent.
    """
    try:
        from transformers.modeling_layers import GenericForSequenceClassification as generic
    except ImportError:  # older transformers
        generic = None
    for cls in model_class.__mro__:
        forward = cls.__dict__.get("forward")
        if forward is None:
            continue
        if cls is generic:
            return True
        try:
            source = inspect.getsource(forward)
        except (OSError, TypeError):
            return False
        if "last_non_pad_token" in source and "pad_token_id" in source:
            return True
        if "super().forward(" not in source:
            return False
    return False


def sequence_classifier_reads(model: nn.Module) -> ReadMode:
    """Where a ``*ForSequenceClassification`` model's own head reads: "first", "last_non_pad" or "all" (unknown)."""
    if reads_last_non_pad_token(type(model)):
        return "last_non_pad"
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return "first" if model_type in CLS_HEAD_MODELS else "all"


@dataclass(frozen=True)
class LayerRole:
    kind: RoleKind
    demux: bool = False  # the last layer: demultiplex its output
    prefix_end: bool = False  # layer K-1: its output is the layer-K state the teacher restarts from


@dataclass(frozen=True)
class MuxPlan:
    family: Family
    stacks: tuple[str, ...]
    hidden_size: int
    roles: dict  # layer key (e.g. "bert.encoder.layer.3") -> LayerRole
    final_norm: Optional[str] = None  # the norm between the last multiplexed layer and the head, if any


def find_final_norm(model: nn.Module, stack: str) -> Optional[str]:
    """Dotted path of the norm a model applies to the output of the layer stack ``stack``, or None.

    The stack's parent holds it beside the stack: the first child registered after the stack whose class is a norm
    (``model.norm`` of LLaMA/Qwen2, ``transformer.ln_f`` of GPT-2/BLOOM/Falcon, ``final_layer_norm`` of GPT-NeoX and
    T5's stacks), else a norm child named ``final...`` registered before it (OPT registers ``final_layer_norm`` before
    ``layers``). An embedding norm (BLOOM's ``word_embeddings_layernorm``) precedes the stack and is never taken.
    """
    parent_path, _, name = stack.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    children = [(child, module) for child, module in parent.named_children()]
    index = next(i for i, (child, _) in enumerate(children) if child == name)

    def is_norm(module: nn.Module) -> bool:
        return "norm" in type(module).__name__.lower()

    after = [child for child, module in children[index + 1:] if is_norm(module)]
    before = [child for child, module in children[:index] if is_norm(module) and child.startswith("final")]
    found = (after or before or [None])[0]
    return None if found is None else (f"{parent_path}.{found}" if parent_path else found)


def _unwrapped(layer: nn.Module) -> nn.Module:
    return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer


def _is_block(layer: nn.Module, no_split: set[str]) -> bool:
    from transformers.modeling_layers import GradientCheckpointingLayer

    layer = _unwrapped(layer)
    return isinstance(layer, GradientCheckpointingLayer) or type(layer).__name__ in no_split


def find_layer_stacks(model: nn.Module) -> list[str]:
    """Dotted paths of the outermost ModuleLists of transformer blocks, in registration order."""
    no_split = set(getattr(model, "_no_split_modules", None) or [])
    found: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(f + ".") for f in found):
            continue  # inside a stack already found
        if isinstance(module, nn.ModuleList) and len(module) and all(_is_block(m, no_split) for m in module):
            found.append(name)
    return found


def model_family(model: nn.Module, first_stack: nn.ModuleList) -> Family:
    """encoder-decoder (config.is_encoder_decoder), decoder (causal attention), or encoder.

    Causal attention is seen on an attention module's ``is_causal``, on ``config.is_decoder``, or, for models whose
    attention modules do not say (BLOOM, MPT, hybrid recurrent models), on the config: a model type that has a
    causal-LM class and no masked-LM class is a decoder (BERT-likes have both and are encoders).
    """
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if any(getattr(m, "is_causal", False) is True for m in _unwrapped(first_stack[0]).modules()):
        return "decoder"
    if getattr(config, "is_decoder", False):
        return "decoder"
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING
    except ImportError:
        return "encoder"
    config_class = type(config)
    causal_only = config_class in MODEL_FOR_CAUSAL_LM_MAPPING and config_class not in MODEL_FOR_MASKED_LM_MAPPING
    return "decoder" if causal_only else "encoder"


def hidden_size_of(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "hidden_size", None) if config is not None else None
    if size is None and hasattr(model, "get_input_embeddings"):
        size = model.get_input_embeddings().embedding_dim
    if size is None:
        raise ValueError("Could not determine the model's hidden size; the model needs config.hidden_size.")
    return int(size)


def check_attention_supported(model: nn.Module) -> None:
    """Raises: ValueError for flex attention, whose BlockMask cannot be combined per group of instances."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == "flex_attention":
        raise ValueError(
            "attn_implementation='flex_attention' is not supported by RevMUX: its BlockMask cannot be combined per "
            "group of multiplexed instances. Load the model with attn_implementation='sdpa' or 'eager' (or switch "
            "with model.set_attn_implementation('sdpa'))."
        )


def check_layer_arguments(model: nn.Module, stacks: list[str]) -> None:
    """Refuse, at injection, layers that take batch-sized tensors revmux cannot combine over a group.

    Raises:
        ValueError: naming the model, the layer class and the arguments, if a layer's forward takes a tensor
            argument that ``grouping.reduce_layer_argument`` has no rule for (e.g. per-instance language ids).
    """
    seen: set[type] = set()
    for path in stacks:
        for layer in model.get_submodule(path):
            layer = _unwrapped(layer)
            if type(layer) in seen:
                continue
            seen.add(type(layer))
            unknown = unknown_layer_arguments(layer)
            if unknown:
                raise ValueError(
                    f"RevMUX cannot serve {type(model).__name__}: its layers ({type(layer).__name__} in {path!r}) take "
                    f"{', '.join(map(repr, unknown))}, which may hold one row per instance, and revmux does not know "
                    "how to combine such an argument over a group of multiplexed instances (it knows attention "
                    "masks, position ids/embeddings/biases and ALiBi biases). Use another model family (e.g. "
                    "LLaMA, Qwen2, GPT-2, BLOOM, BERT, T5), or report the model so a rule can be added to "
                    "revmux/tuner/grouping.py."
                )


def check_combine_first(k: int, n_layers: int, stack: str = "the layer stack") -> None:
    """Raises: ValueError unless 0 <= K < n_layers (layers [0, K) per instance, [K, L) on composites)."""
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < n_layers:
        raise ValueError(
            f"combine_first={k!r} is out of range for the {n_layers}-layer stack {stack!r}: it must satisfy "
            f"0 <= combine_first <= {n_layers - 1} (layers [0, K) run per instance, [K, {n_layers}) on composites)."
        )


def plan_injection(model: nn.Module, stacks: list[str] | None, compose_size: int,
                   combine_first: int | None, demux_after: str = "last_layer") -> MuxPlan:
    """Resolve the layer stacks and the role of every layer for one adapter.

    ``demux_after``: "last_layer", "final_norm", or "auto" (the final norm for decoders that have one, else the last
    layer); the plan's ``final_norm`` is the norm's path when the demultiplexer sits after it.

    Raises:
        ValueError: if no layer stack is found, several are found where one is expected, a layer takes batch-sized
            arguments revmux cannot combine per group, the hidden size is not divisible by N, K is out of range, the
            model uses flex attention, or ``demux_after="final_norm"`` on a model without a final norm.
    """
    check_attention_supported(model)
    if stacks is None:
        stacks = find_layer_stacks(model)
        if not stacks:
            raise ValueError(
                f"No layer stack found in {type(model).__name__}: revmux looks for an nn.ModuleList of transformer "
                "blocks. Pass RevMuxConfig(target_modules=['path.to.layers']) naming the ModuleList of blocks."
            )
    else:
        for path in stacks:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                module = None
            if not isinstance(module, nn.ModuleList) or not len(module):
                raise ValueError(
                    f"target_modules entry {path!r} is not a non-empty nn.ModuleList of layers in "
                    f"{type(model).__name__}. Found layer stacks: {find_layer_stacks(model) or 'none'}."
                )
    expected = 2 if getattr(getattr(model, "config", None), "is_encoder_decoder", False) else 1
    if len(stacks) != expected:
        raise ValueError(
            f"Expected {expected} layer stack(s) in {type(model).__name__} but found {stacks}. Pass "
            "RevMuxConfig(target_modules=[...]) with the stack to multiplex (and, for an encoder-decoder, the "
            "decoder stack second)."
        )

    check_layer_arguments(model, stacks)
    hidden_size = hidden_size_of(model)
    check_divisible(hidden_size, compose_size)

    mux_stack = model.get_submodule(stacks[0])
    n_layers = len(mux_stack)
    k = n_layers // 2 if combine_first is None else combine_first
    check_combine_first(k, n_layers, stacks[0])

    roles: dict[str, LayerRole] = {}
    for i in range(n_layers):
        kind = "pass" if i < k else ("mux" if i == k else "carry")
        roles[f"{stacks[0]}.{i}"] = LayerRole(kind, demux=len(stacks) == 1 and i == n_layers - 1,
                                              prefix_end=i == k - 1)
    if len(stacks) == 2:
        n_dec = len(model.get_submodule(stacks[1]))
        for i in range(n_dec):
            roles[f"{stacks[1]}.{i}"] = LayerRole("collapse" if i == 0 else "carry", demux=i == n_dec - 1)
    family = model_family(model, mux_stack)
    norm = find_final_norm(model, stacks[-1])  # the demultiplexed stack: the decoder of an encoder-decoder
    if demux_after == "final_norm" and norm is None:
        raise ValueError(
            f"demux_after='final_norm', but no final norm follows the layer stack {stacks[-1]!r} of "
            f"{type(model).__name__} (revmux looks for a norm module beside the stack, e.g. model.norm or ln_f). Use "
            "demux_after='last_layer'.")
    at_norm = demux_after == "final_norm" or (demux_after == "auto" and family == "decoder" and norm is not None)
    return MuxPlan(family, tuple(stacks), hidden_size, roles, final_norm=norm if at_norm else None)


def read_positions(mode: ReadMode, batch_size: int, length: int, input_ids=None, attention_mask=None,
                   pad_token_id=None, device=None):
    """(B,) position each instance's head reads, or None for every position.

    ``first``: position 0. ``last_real``: the last position the (right-padded) attention mask attends.
    ``last_non_pad``: transformers' sequence-classification rule, replicated exactly: the rightmost token that is
    not ``pad_token_id``, or the last position when there is no pad token or only embeddings are given.
    """
    import torch

    if mode == "all":
        return None
    if mode == "first":
        return torch.zeros(batch_size, dtype=torch.long, device=device)
    if mode == "last_real" and attention_mask is not None:
        return attention_mask.long().sum(-1) - 1
    if mode == "last_non_pad" and input_ids is not None and pad_token_id is not None:
        non_pad = (input_ids != pad_token_id).int()
        return (torch.arange(length, device=input_ids.device, dtype=torch.int32) * non_pad).argmax(-1).long()
    return torch.full((batch_size,), length - 1, dtype=torch.long, device=device)

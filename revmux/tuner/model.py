"""RevMuxModel: the PEFT tuner that injects RevMUX into a Hugging Face model."""

from __future__ import annotations

import contextlib
import inspect
import re
import warnings
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTuner
from peft.utils.other import ModulesToSaveWrapper, _set_trainable
from torch import nn

from .architectures import (MuxPlan, ReadMode, check_attention_supported, default_composite, plan_injection,
                            sequence_classifier_reads)
from .config import RevMuxConfig
from .grouping import check_identical_in_groups, group_union
from .layer import RevMuxLayer, demux_after_final_norm, execution_device_and_dtype
from .mux import MULTIPLEXER_MODULE_NAMES, build_multiplexer
from .state import (READING, RECORDING, REPLAY, AdapterSpec, Recording, Replay, close_forward, open_forward,
                    read_mode_for, scoped)

MERGE_ERROR = (
    "merge_and_unload() is impossible for RevMUX: a multiplexer changes the batch between layers, it is not a "
    "weight update that can be folded into the base model. Use unload() to get the base model back, or keep the "
    "PeftModel for multiplexed inference."
)


# The classification heads PEFT itself trains for SEQ_CLS (PeftModelForSequenceClassification): trained with
# RevMuxConfig(train_head=True) only.
HEAD_MODULE_NAMES = ("classifier", "score")

# Module names inside the multiplexers: PEFT's save filter drops keys that contain ".<other adapter name>.".
RESERVED_ADAPTER_NAMES = MULTIPLEXER_MODULE_NAMES


def has_classification_head(model: nn.Module) -> bool:
    """Whether ``model`` has a module named like a classification head (``HEAD_MODULE_NAMES``), the one
    ``train_head=True`` copies; a label-word decoder (its LM head reads the label words) has none."""
    return any(name.rpartition(".")[2] in HEAD_MODULE_NAMES for name, _ in model.named_modules())


class RevMuxModel(BaseTuner):
    """Wraps every block of the model's layer stacks in a ``RevMuxLayer`` and checks each forward's inputs.

    Created by ``get_peft_model(model, RevMuxConfig(...))`` or ``revmux.get_revmux_model``; not meant to be
    instantiated directly.
    """

    prefix: str = "revmux_"
    tuner_layer_cls = RevMuxLayer
    target_module_mapping: dict = {}

    def __init__(self, model, config, adapter_name, low_cpu_mem_usage: bool = False, state_dict=None):
        self._plans: dict[str, MuxPlan] = {}
        self._specs: dict[str, AdapterSpec] = {}
        self._norm_hooks: dict = {}  # final-norm path -> hook handle (demux_after="final_norm")
        super().__init__(model, config, adapter_name, low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)
        # Any wrapper tells whether adapters are enabled and which one is active: PEFT toggles all of them together.
        # (kept out of nn.Module registration: it is one of the model's own layers, not a part of the tuner)
        self.__dict__["_probe_layer"] = next(m for m in self.model.modules() if isinstance(m, RevMuxLayer))
        self._hooks = []
        for entry, open_hook in self._entries():
            self._hooks.append(entry.register_forward_pre_hook(open_hook, with_kwargs=True))
            self._hooks.append(entry.register_forward_hook(lambda module, *_: close_forward(module), always_call=True))

    def _entries(self) -> list:
        """(module, pre-hook) pairs whose forward opens a per-forward context (see state.py).

        The inner backbone (BertModel, LlamaModel, ...; the model itself for T5) sees every forward, whether it comes
        through the task head or straight to the backbone; an encoder-decoder's encoder and decoder are also called
        on their own (``generate`` runs the encoder once, then the decoder step by step). Their entries are the modules
        that receive the token ids (T5's ``decoder``, BART's ``model.decoder``, ``EncoderDecoderModel``'s whole
        ``decoder`` model), so the decoder's ids are what the identical-inputs check sees (see ``_stack_entry``).
        """
        backbone = getattr(self.model, "base_model", self.model)
        self._forward_params = list(inspect.signature(backbone.forward).parameters)
        entries = [(backbone, self._open_backbone_forward)]
        plan = next(iter(self._plans.values()))
        if plan.family == "encoder-decoder":
            encoder = self._stack_entry(plan.stacks[0], plan.stacks[1])
            decoder = self._stack_entry(plan.stacks[1], plan.stacks[0])
            entries += [(encoder, self._open_encoder_forward), (decoder, self._open_decoder_forward)]
        return entries

    # ---- injection -------------------------------------------------------------------------------------------
    def inject_adapter(self, model: nn.Module, adapter_name: str, *args, **kwargs) -> None:
        self._injecting = adapter_name  # PEFT's hooks below receive the config, not the name
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
        finally:
            self._injecting = None
        config = self.peft_config[adapter_name]
        if config.train_head:
            self._wrap_head(model, adapter_name, config)

    @staticmethod
    def _wrap_head(model: nn.Module, adapter_name: str, config: RevMuxConfig) -> None:
        """train_head=True: a trainable, saved copy of the head per adapter (PEFT's ModulesToSaveWrapper).

        Raises:
            ValueError: if the model has no module named like a classification head.
        """
        if not has_classification_head(model):
            raise ValueError(f"train_head=True, but {type(model).__name__} has no classification head (a module named "
                             f"{' or '.join(HEAD_MODULE_NAMES)}). Use train_head=False.")
        _set_trainable(model, adapter_name, module_names=list(HEAD_MODULE_NAMES), inference_mode=config.inference_mode)

    def _adapter_name_of(self, peft_config: RevMuxConfig) -> str:
        injecting = getattr(self, "_injecting", None)
        if injecting is not None:
            return injecting
        return next(name for name, conf in self.peft_config.items() if conf is peft_config)

    def _prepare_adapter_config(self, peft_config: RevMuxConfig, model_config: dict) -> RevMuxConfig:
        return peft_config  # resolved against the model in _prepare_model

    def _prepare_model(self, peft_config: RevMuxConfig, model: nn.Module) -> None:
        name = self._adapter_name_of(peft_config)
        if name in RESERVED_ADAPTER_NAMES:
            raise ValueError(f"Adapter name {name!r} is also the name of a module inside the multiplexer, so PEFT "
                             f"would mix up their weights when saving. Choose another name (not one of "
                             f"{sorted(RESERVED_ADAPTER_NAMES)}).")
        plan = plan_injection(model, peft_config.target_modules, peft_config.compose_size, peft_config.combine_first,
                              peft_config.demux_after)
        sizes = [len(model.get_submodule(stack)) for stack in plan.stacks]
        if peft_config.stack_sizes is not None and list(peft_config.stack_sizes) != sizes:
            raise ValueError(
                f"This adapter was made for a model whose layer stacks {list(plan.stacks)} have "
                f"{peft_config.stack_sizes} layers, but {type(model).__name__} has {sizes}: it belongs to another base "
                f"model. Load it onto the model it was trained on (adapter_config.json: base_model_name_or_path="
                f"{peft_config.base_model_name_or_path!r}).")
        peft_config.target_modules, peft_config.stack_sizes = list(plan.stacks), sizes
        peft_config.combine_first = sum(role.kind == "pass" for role in plan.roles.values())
        peft_config.demux_after = "final_norm" if plan.final_norm else "last_layer"  # resolved here, saved
        if peft_config.composite == "auto":  # resolved here, saved
            peft_config.composite = ("blocks" if peft_config.mux_type == "adapter" else
                                     default_composite(plan.family, peft_config.compose_size))
        self._plans[name] = plan
        # What the head reads depends on the model class, not on the PEFT task type (task_type may be None).
        is_classifier = type(model).__name__.endswith("ForSequenceClassification")
        auto = peft_config.demux_positions == "auto" and is_classifier
        mux_layer = model.get_submodule(next(key for key, role in plan.roles.items() if role.kind == "mux"))
        from . import offload  # (imported here: only offloaded bases need it)

        if offload.is_offloaded(getattr(model, "hf_device_map", None)):
            offload.install()  # PeftModel.from_pretrained dispatches this model again: see offload.py
        device, dtype = execution_device_and_dtype(mux_layer)
        multiplexer = build_multiplexer(peft_config.mux_type, plan.hidden_size, peft_config.compose_size,
                                        peft_config.coupling_hidden_size, peft_config.demux_hidden_size,
                                        peft_config.dropout, peft_config.standardize,
                                        peft_config.composite).to(device=device, dtype=dtype)
        self._specs[name] = AdapterSpec(
            name, peft_config.compose_size, plan.family, read_mode=sequence_classifier_reads(model) if auto else "all",
            pad_token_id=getattr(model.config.get_text_config(), "pad_token_id", None),
            align_last_tokens=peft_config.align_last_tokens and plan.family == "decoder", final_norm=plan.final_norm,
            multiplexer=multiplexer)
        if plan.final_norm is not None and plan.final_norm not in self._norm_hooks:  # one hook serves every adapter
            norm = model.get_submodule(plan.final_norm)
            self._norm_hooks[plan.final_norm] = norm.register_forward_hook(demux_after_final_norm)

    def _check_target_module_exists(self, peft_config: RevMuxConfig, key: str) -> bool:
        return key in self._plans[self._adapter_name_of(peft_config)].roles

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key,
                            parameter_name: Optional[str] = None) -> None:
        plan = self._plans[adapter_name]
        args = (adapter_name, plan.roles[current_key], self._specs[adapter_name], peft_config)
        if isinstance(target, RevMuxLayer):
            target.update_layer(*args)
            return
        new_module = RevMuxLayer(target, *args)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent, child_name, new_module, child) -> None:
        setattr(parent, child_name, new_module)  # a block has no single .weight to re-home

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """``...revmux_mux.<adapter>.coupling.functions.0.0.weight`` -> ``...revmux_mux.coupling.functions.0.0.weight``.

        The multiplexer is a nested module, so the adapter name sits deeper than PEFT's default rule looks; the same
        rule is used for saving and (through the base class) for loading, so both stay symmetric.
        """
        return re.sub(rf"(\.{cls.prefix}\w+)\.{re.escape(adapter_name)}(?=\.|$)", r"\1", key)

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model: nn.Module, config: RevMuxConfig, adapter_name: str,
                                           state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """PEFT's key mapping, then a check that the saved weights are exactly the multiplexer the config describes.

        Raises:
            ValueError: if multiplexer weights are missing, unexpected or of another shape (an edited
                ``compose_size`` / ``combine_first`` / ``mux_type`` / ``standardize`` in adapter_config.json, or weights
                from another model), instead of PEFT's warning and a randomly initialised multiplexer.
        """
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        marker = f".{cls.prefix}"
        expected = {key: value.shape for key, value in model.state_dict().items()  # this adapter's multiplexer
                    if marker in key and f".{adapter_name}." in key}
        saved = {key: value.shape for key, value in remapped.items() if marker in key}
        missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
        reshaped = sorted(k for k in expected.keys() & saved.keys() if tuple(expected[k]) != tuple(saved[k]))
        if missing or unexpected or reshaped:
            problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in
                        ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape")) if keys]
            raise ValueError(
                f"The saved weights do not fit the multiplexer that adapter_config.json describes (compose_size="
                f"{config.compose_size}, combine_first={config.combine_first}, mux_type={config.mux_type!r}, "
                f"standardize={config.standardize}, composite={config.composite!r}): {'; '.join(problems)}. These "
                "fields must stay as they were "
                "when the adapter was saved; was adapter_config.json edited, or the weights saved from another model?")
        return remapped

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._plans.pop(adapter_name, None)
        self._specs.pop(adapter_name, None)

    # ---- what cannot be done -----------------------------------------------------------------------------------
    def _check_merge_allowed(self):
        raise ValueError(MERGE_ERROR)

    def merge_adapter(self, *args, **kwargs) -> None:
        raise ValueError(MERGE_ERROR)

    def _unload_and_optionally_merge(self, merge: bool = True, progressbar: bool = False, safe_merge: bool = False,
                                     adapter_names: Optional[list[str]] = None):
        if merge:
            raise ValueError(MERGE_ERROR)
        for hook in [*self._hooks, *self._norm_hooks.values()]:
            hook.remove()
        self._restore_heads()
        return super()._unload_and_optionally_merge(merge=False, progressbar=progressbar, adapter_names=adapter_names)

    def _restore_heads(self) -> None:
        """Put the base model's own head back where train_head=True wrapped it. (PEFT's unload keeps the trained copy
        of a ``modules_to_save`` module; RevMUX's copy was trained on demultiplexed states and belongs to the
        adapter, so the base model comes back unchanged.)"""
        wrapped = [(name, module) for name, module in self.model.named_modules()
                   if isinstance(module, ModulesToSaveWrapper) and name.rpartition(".")[2] in HEAD_MODULE_NAMES]
        for name, wrapper in wrapped:
            parent_name, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent_name) if parent_name else self.model, child,
                    wrapper.original_module)

    def generate(self, *args, **kwargs):
        """Greedy or sampled generation; beam search is rejected (beams would be multiplexed with each other).

        Raises:
            ValueError: if ``num_beams > 1`` while the adapter is enabled, or if an encoder-decoder model is asked for
                more than one new token (its decoder runs once per group, so a group cannot continue differently).
        """
        spec = self._active_spec()
        if spec is None:
            return self.model.generate(*args, **kwargs)
        generation_config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        num_beams = kwargs.get("num_beams") or getattr(generation_config, "num_beams", 1) or 1
        new_tokens = kwargs.get("max_new_tokens") or getattr(generation_config, "max_new_tokens", None)
        if new_tokens is None:
            new_tokens = (kwargs.get("max_length") or getattr(generation_config, "max_length", 20)) - 1
        mask = kwargs.get("attention_mask")
        if spec.family == "decoder" and mask is not None and not bool(mask.bool().all()):
            raise ValueError(
                "generate() on a multiplexed decoder needs equal-length prompts without padding: instances of a group "
                "share positions, and a right-padded prompt would continue from a pad token. Group prompts of equal "
                "token length (e.g. revmux.serve.inference sorts by length), or disable the adapter."
            )
        if spec.family == "encoder-decoder" and new_tokens > 1:
            raise ValueError(
                f"Generating {new_tokens} tokens is not supported on a multiplexed encoder-decoder: the decoder runs "
                "once per group, so all instances of a group must share their decoder inputs. Pass max_new_tokens=1 "
                "(label-word classification), read model(...).logits at the answer position, or disable the adapter."
            )
        if num_beams > 1:
            raise ValueError(
                f"num_beams={num_beams} is not supported with RevMUX: beam search expands and reorders the batch, "
                "which would multiplex beams and break the groups. Use greedy decoding or sampling (num_beams=1), or "
                "run with `with model.disable_adapter():`."
            )
        return self.model.generate(*args, **kwargs)

    @contextlib.contextmanager
    def reading(self, mode: ReadMode):
        """Demultiplex only where ``mode`` says inside the block ("all", "first", "last_real", "last_non_pad").

        For example ``with model.base_model.reading("last_real"):`` around a decoder backbone call that feeds label
        words: only each instance's last real token is restored (the rest of the last hidden state is zero). Applies
        to the calling thread's forwards only.
        """
        spec = self._active_spec()
        if spec is None:
            yield
            return
        with scoped(READING, (spec, mode)):
            yield

    @contextlib.contextmanager
    def recording(self):
        """Record what the training losses need during the calling thread's forwards inside the block.

        Yields:
            a ``Recording``: the layer-K states, the multiplexed instances and the restored last hidden state.
        """
        spec = self._require_spec("recording()")
        with scoped(RECORDING, Recording(spec)) as recording:
            yield recording

    @contextlib.contextmanager
    def teacher(self, recording: Recording):
        """Run the frozen backbone un-multiplexed from ``recording``'s layer-K states (the student's, usually).

        Layers [0, K) are not recomputed; the last layer's output lands in ``recording.teacher_hidden``.
        """
        spec = self._require_spec("teacher()")
        if recording.layer_k_states is None:
            raise RuntimeError("teacher() replays the layer-K states of a student forward; run the student under "
                               "recording() first.")
        with scoped(REPLAY, Replay(spec, recording.layer_k_states, multiplex=False, into=recording)):
            yield recording

    @contextlib.contextmanager
    def unmultiplexed(self):
        """Run the calling thread's forwards inside the block as the frozen backbone, recording for each forward
        the layer-K states and the last layer's output (``teacher_hidden``): what cached-prefix training needs.

        Yields:
            a ``Recording`` (of the last forward in the block).
        """
        spec = self._require_spec("unmultiplexed()")
        recording = Recording(spec)
        with scoped(REPLAY, Replay(spec, None, multiplex=False, into=recording)):
            yield recording

    @contextlib.contextmanager
    def replaying(self, layer_k_states: torch.Tensor):
        """Start the calling thread's forwards inside the block from given layer-K states, (B, T, d).

        Layers [0, K) do not run on the instances (only on the first row, for what they return besides their hidden
        states); the states must be those of the same inputs, padded alike (cached-prefix training).
        """
        spec = self._require_spec("replaying()")
        with scoped(REPLAY, Replay(spec, layer_k_states)):
            yield

    def calibrate(self, input_mean, input_std, output_mean, output_std) -> None:
        """Set the active adapter's standardisation statistics, each (d,): the states entering the multiplexer and
        the states the head reads (``RevMuxConfig(standardize=True)``; see ``Multiplexer``)."""
        self._require_spec("calibrate()").multiplexer.set_statistics(input_mean, input_std, output_mean, output_std)

    def calibrate_basis(self, layer_k_states: torch.Tensor) -> None:
        """Calibrate the active adapter's ``composite="basis"`` from (tokens, d) layer-K states of real tokens (mean
        and principal directions; after ``calibrate`` when the adapter standardises). Resets the multiplexer's
        down-projections and the demultiplexer's U_n to start in place: call it before training."""
        self._require_spec("calibrate_basis()").multiplexer.set_basis(layer_k_states)

    def readout_statistics(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(mean, std), each (d,), of the states the head reads, when the active adapter standardises
        (``RevMuxConfig(standardize=True)``, calibrated); None otherwise."""
        multiplexer = self._require_spec("readout_statistics()").multiplexer
        return (multiplexer.output_mean, multiplexer.output_std) if multiplexer.standardize else None

    @property
    def compose_size(self) -> int:
        """N of the active adapter."""
        return self._require_spec("compose_size").compose_size

    def _require_spec(self, what: str) -> AdapterSpec:
        spec = self._active_spec()
        if spec is None:
            raise RuntimeError(f"{what} needs one active, enabled RevMUX adapter.")
        return spec

    # ---- per-forward contexts --------------------------------------------------------------------------------
    def _active_spec(self) -> Optional[AdapterSpec]:
        """The spec of the adapter that will run, or None when adapters are disabled."""
        layer = self._probe_layer
        if layer.disable_adapters or len(layer.active_adapters) != 1:
            return None
        return self._specs.get(layer.active_adapters[0])

    def _argument(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        index = self._forward_params.index(name) if name in self._forward_params else len(args)
        return args[index] if index < len(args) else None

    def _open_encoder_forward(self, module: nn.Module, args: tuple, kwargs: dict):
        spec = self._active_spec()
        if spec is not None:
            mask = self._bound(module, args, kwargs).arguments.get("attention_mask")
            open_forward(spec, module, attention_mask=mask if isinstance(mask, torch.Tensor) and mask.dim() == 2
                         else None)

    def _open_decoder_forward(self, module: nn.Module, args: tuple, kwargs: dict):
        """Decoder pre-hook (encoder-decoder models): the decoder runs once per group on the G composites.

        The hooked module is the one that receives the decoder's token ids (``_stack_entry``), so the check sees
        ``decoder_input_ids`` (or ``decoder_inputs_embeds``) and the decoder's own attention mask, whoever calls it:
        the outer model, ``generate`` or the caller.

        Raises:
            ValueError: if decoder inputs or decoder attention masks differ inside a group.
        """
        spec = self._active_spec()
        if spec is None:
            return None
        context = open_forward(spec, module)
        if context.replay is not None and not context.replay.multiplex:
            return None  # the teacher: un-multiplexed
        bound = self._bound(module, args, kwargs)
        given = bound.arguments
        inputs = given.get("input_ids")
        inputs = inputs if inputs is not None else given.get("inputs_embeds")
        if inputs is not None:
            check_identical_in_groups(inputs, spec.compose_size)  # (B, T_dec[, d])
            context.batch_size = inputs.shape[0]  # also right when the encoder ran in another call
            mask = given.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.dim() > 1 and mask.shape[0] == inputs.shape[0]:
                check_identical_in_groups(mask, spec.compose_size, what="decoder_attention_mask")
        mask, encoded = given.get("encoder_attention_mask"), given.get("encoder_hidden_states")
        if mask is None or encoded is None or mask.shape[0] == encoded.shape[0]:
            return None
        grouped = group_union(mask, spec.compose_size)  # (B, T) -> (G, T)
        if "encoder_attention_mask" in kwargs:
            return args, {**kwargs, "encoder_attention_mask": grouped}
        given["encoder_attention_mask"] = grouped  # it came positionally
        return bound.args, bound.kwargs

    def _stack_entry(self, stack: str, other: str) -> nn.Module:
        """The outermost module that holds ``stack`` but not ``other``: where that half of the model gets its ids.

        Raises:
            ValueError: if that module's forward takes neither ``input_ids`` nor ``inputs_embeds`` (revmux could not
                check that the decoder inputs of a group are identical).
        """
        parts = stack.split(".")
        path = next((".".join(parts[:i]) for i in range(1, len(parts))
                     if not (other + ".").startswith(".".join(parts[:i]) + ".")), None)
        module = None if path is None else self.model.get_submodule(path)
        if module is None or not {"input_ids", "inputs_embeds"} & set(inspect.signature(module.forward).parameters):
            raise ValueError(
                f"RevMUX cannot serve {type(self.model).__name__}: no module around the layer stack {stack!r} "
                f"(and not around {other!r}) takes input_ids (found: {path!r}), so revmux cannot check that the "
                "decoder inputs of a group are identical. Use an encoder-decoder whose encoder and decoder are "
                "modules that take input_ids (T5, BART, EncoderDecoderModel), or a decoder-only or encoder model."
            )
        return module

    @staticmethod
    def _bound(module: nn.Module, args: tuple, kwargs: dict) -> inspect.BoundArguments:
        """A call's arguments by name (positional ones included); edit ``.arguments`` and call with .args/.kwargs."""
        return inspect.signature(module.forward).bind_partial(*args, **kwargs)

    def _open_backbone_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Pre-hook on the base model: reject inputs RevMUX cannot serve, then open this forward's context.

        Raises:
            ValueError: for flex attention, a static cache, or a left-padded batch on a decoder-only model.
        """
        spec = self._active_spec()
        if spec is None:
            return
        check_attention_supported(self.model)
        cache = self._argument("cache", args, kwargs) or self._argument("past_key_values", args, kwargs)
        if cache is not None and type(cache).__name__ not in ("DynamicCache", "EncoderDecoderCache"):
            raise ValueError(f"{type(cache).__name__} is not supported by RevMUX: its layers after the multiplexing "
                             "point hold fewer rows than the batch. Use the default DynamicCache.")
        mask = self._argument("attention_mask", args, kwargs)
        mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        input_ids = self._argument("input_ids", args, kwargs)
        tokens = input_ids if input_ids is not None else self._argument("inputs_embeds", args, kwargs)
        cached_step = tokens is not None and mask is not None and tokens.shape[1] != mask.shape[1]
        if spec.family == "decoder" and mask is not None and not cached_step:
            real = mask.bool()
            if (~real[:, :-1] & real[:, 1:]).any():
                raise ValueError(
                    "Left-padded batch on a decoder-only model: RevMUX shares position ids within a group and reads "
                    "each instance at its own last real token, so inputs must be right-padded. Set "
                    "tokenizer.padding_side = 'right' (or re-pad the batch)."
                )
        hidden_wanted = kwargs.get("output_hidden_states", getattr(self.model.config, "output_hidden_states", False))
        partial = tokens is not None and not hidden_wanted and not cached_step and spec.family != "encoder-decoder"
        context = open_forward(spec, module, read_mode=read_mode_for(spec) if partial else "all", input_ids=input_ids,
                               attention_mask=mask, length=0 if tokens is None else tokens.shape[1])
        multiplexes = context.replay is None or context.replay.multiplex  # not the teacher / caching pass
        if tokens is not None and tokens.shape[0] < spec.compose_size and not cached_step and multiplexes:
            self._warn_underfilled(tokens.shape[0], spec.compose_size)

    def _warn_underfilled(self, batch_size: int, compose_size: int) -> None:
        """Once per model: a forward with fewer than N instances multiplexes them with dummy copies (no speed-up).

        Only for a caller's own forwards: training steps and revmux's own loops (evaluation, prediction, serving),
        whose last batch is a remainder by design, stay quiet. The warning points at the caller's line, not at this
        hook (no revmux source line in the output).
        """
        if getattr(self, "_warned_underfilled", False) or self.model.training:
            return
        stacklevel = _caller_stacklevel()
        if stacklevel is None:
            return
        self._warned_underfilled = True
        warnings.warn(
            f"A forward with {batch_size} instance(s) on a RevMUX adapter with compose_size={compose_size}: the group is "
            f"completed with copies of the last instance, so it costs as much as {compose_size} instances and gains "
            f"nothing. Batch at least {compose_size} inputs per forward (e.g. pipeline(..., batch_size=64), "
            "MuxClassifier(batch_size=64)).", stacklevel=stacklevel)


_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "revmux", "contextlib", "functools")
_PACKAGE_DIR = __file__.rsplit("tuner", 1)[0]  # .../revmux/


def _caller_stacklevel() -> Optional[int]:
    """``warnings.warn``'s stacklevel of the innermost frame outside the libraries around a model, or None when
    revmux's own loops (evaluation, prediction, serving: anything of revmux outside this tuner) made the batch: they
    complete a last, smaller batch by design."""
    frame, level, found = inspect.currentframe(), 1, None  # level L here is stacklevel L - 1 for warnings.warn
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        in_revmux = module.partition(".")[0] == "revmux" or frame.f_code.co_filename.startswith(_PACKAGE_DIR)
        if in_revmux and not module.startswith("revmux.tuner"):
            return None
        library = in_revmux or module.partition(".")[0] in _LIBRARIES
        if found is None and level > 2 and not library:
            found = level - 1
        frame, level = frame.f_back, level + 1
    return found

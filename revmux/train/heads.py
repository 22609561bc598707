"""How each model family turns a batch of examples into class logits with its own frozen head.

| family          | model class                    | prompt                         | class logits read at          |
|-----------------|--------------------------------|--------------------------------|-------------------------------|
| encoder         | AutoModelForSequenceClassification | the text (pair)            | the classifier on CLS         |
| decoder         | AutoModelForCausalLM           | instruction + text + "Answer:" | label words, last real token  |
| encoder-decoder | AutoModelForSeq2SeqLM          | instruction + text             | label words, decoder position 0 |

``positions(batch)`` is where the training losses read the last hidden state (method.md, InfoNCE).
Works on a plain transformers model (N = 1 teacher) and on a RevMUX PeftModel alike.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from revmux.tuner.architectures import read_positions, sequence_classifier_reads
from revmux.train.data import Example, TaskSpec


_TOKENIZER_LOCK = threading.RLock()


def unwrap(model):
    """The transformers model under a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def revmux_tuner(model):
    """The RevMuxModel of a PeftModel, or None for a plain model."""
    from revmux.tuner.model import RevMuxModel

    tuner = getattr(model, "base_model", None)
    return tuner if isinstance(tuner, RevMuxModel) else None


class ClassificationHead:
    """Tokenizes examples for a family and reads class logits from the model's own head."""

    family: str
    truncation_side = "right"

    def __init__(self, tokenizer, task: TaskSpec, max_length: int = 128):
        self.tokenizer, self.task, self.max_length = tokenizer, task, max_length

    def collate(self, examples: Sequence[Example]) -> dict:
        """Right-padded tensors for a batch, with ``labels`` (B,) class ids."""
        batch = dict(self.encode(examples))
        batch["labels"] = torch.tensor([e.label for e in examples], dtype=torch.long)
        return batch

    def inputs(self, examples: Sequence[Example]) -> tuple[list[str], list[str] | None]:
        """The texts (and second texts) the tokenizer sees."""
        raise NotImplementedError

    def encode(self, examples: Sequence[Example]) -> dict:
        return self._tokenize(*self.inputs(examples))

    def encode_lengths(self, examples: Sequence[Example]) -> list[list[int]]:
        """Token ids per example without padding (for length-aware batching)."""
        texts, pairs = self.inputs(examples)
        with self._tokenizer_settings():
            return self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)["input_ids"]

    def logits(self, model, batch: dict) -> torch.Tensor:
        """(B, C) class logits."""
        raise NotImplementedError

    def positions(self, batch: dict) -> torch.Tensor:
        """(B,) position of the last hidden state the losses compare (student vs teacher)."""
        raise NotImplementedError

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) class logits as this head reports them: minus the calibration of a zero-shot decoder."""
        return logits

    def uncalibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """``calibrated``'s inverse: what the model's head itself scored (what a prefix cache stores)."""
        return logits

    def set_calibration(self, values) -> None:
        """Use a saved zero-shot calibration: (C,) values subtracted from the class logits (``LabelWordHead``).

        Raises:
            ValueError: for a head that is not calibrated (only zero-shot decoders are).
        """
        raise ValueError(f"{type(self).__name__} ({self.family} models) takes no calibration: only zero-shot decoders "
                         "(label words read by the LM head) are calibrated. Pass calibration=None.")

    def _tokenize(self, texts, pairs=None) -> dict:
        with self._tokenizer_settings():  # right padding: RevMUX shares positions within a group
            return self.tokenizer(texts, pairs, padding=True, truncation=True, max_length=self.max_length,
                                  padding_side="right", return_tensors="pt")

    @contextlib.contextmanager
    def _tokenizer_settings(self):
        """Tokenize with this head's truncation side, one call at a time, leaving the caller's tokenizer as it was.

        A fast tokenizer keeps its padding and truncation settings in shared state that every call rewrites, so
        concurrent calls (a MuxClassifier used from several threads) would tokenize with each other's settings.
        """
        with _TOKENIZER_LOCK:
            previous = self.tokenizer.truncation_side
            self.tokenizer.truncation_side = self.truncation_side
            try:
                yield
            finally:
                self.tokenizer.truncation_side = previous


class SequenceClassifierHead(ClassificationHead):
    """``*ForSequenceClassification`` models: their own head reads CLS (encoders) or the last non-pad token
    (decoders, transformers' rule)."""

    family = "encoder"  # or a decoder with a classification head: what matters here is that the model's head reads

    def __init__(self, tokenizer, task, max_length: int = 128, reads: str = "first", pad_token_id=None):
        super().__init__(tokenizer, task, max_length)
        self.reads, self.pad_token_id = reads, pad_token_id

    def inputs(self, examples):
        return [e.text for e in examples], ([e.text_pair for e in examples] if self.task.pair else None)

    def logits(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits

    def positions(self, batch):
        ids = batch["input_ids"]
        return read_positions(self.reads, len(ids), ids.shape[1], ids, batch.get("attention_mask"),
                              self.pad_token_id)


class LabelWordHead(ClassificationHead):
    """Decoder LMs: an instruction prompt; the LM head scores the label words at each instance's last real token."""

    family = "decoder"
    truncation_side = "left"  # keep the question and answer cue at the end

    def __init__(self, tokenizer, task, max_length: int = 128, chat_template: bool = False):
        super().__init__(tokenizer, task, max_length)
        self.chat = chat_template and bool(getattr(tokenizer, "chat_template", None))
        self.calibration: torch.Tensor | None = None  # (C,) subtracted from the label-word logits
        # With a chat template the answer starts a new line; in a plain prompt it follows "Answer:" and a space.
        words = task.label_words if self.chat else [" " + w for w in task.label_words]
        self.label_ids = torch.tensor([tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words])
        if len(set(self.label_ids.tolist())) != len(words):
            raise ValueError(f"The label words {task.label_words} share their first token in this tokenizer; "
                             "choose label words that start differently.")

    def prompt(self, example: Example) -> str:
        body = example.text if example.text_pair is None else f"{example.text}\n{example.text_pair}"
        answer = f"Answer with one word: {' or '.join(self.task.label_words)}."
        if self.chat:
            message = f"{self.task.instruction}\n\n{body}\n\n{answer}"
            return self.tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                      add_generation_prompt=True)
        return f"{self.task.instruction}\n{body}\n{answer}\nAnswer:"

    def inputs(self, examples):
        return [self.prompt(e) for e in examples], None

    def encode(self, examples):
        encoded = super().encode(examples)
        encoded.pop("token_type_ids", None)
        return encoded

    def logits(self, model, batch):
        hf = unwrap(model)
        tuner = revmux_tuner(model)
        reading = tuner.reading("last_real") if tuner is not None else contextlib.nullcontext()
        with reading:  # demultiplex only where the label words are read
            hidden = hf.base_model(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).last_hidden_state  # (B, T, d)
        last = self.positions(batch).to(hidden.device)
        picked = hidden[torch.arange(len(hidden), device=hidden.device), last]  # (B, d)
        head = hf.get_output_embeddings()
        ids = self.label_ids.to(hidden.device)
        bias = None if getattr(head, "bias", None) is None else head.bias[ids]
        return self.calibrated(F.linear(picked.to(head.weight.dtype), head.weight[ids], bias))  # (B, C)

    def calibrated(self, logits):
        if self.calibration is None:
            return logits
        return logits - self.calibration.to(logits.device, logits.dtype)  # a saved vector reads back as float32

    def uncalibrated(self, logits):
        if self.calibration is None:
            return logits
        return logits + self.calibration.to(logits.device, logits.dtype)

    @torch.no_grad()
    def calibrate(self, model, examples: Sequence[Example], batch_size: int = 16) -> torch.Tensor:
        """Contextual calibration (Zhao et al., 2021): subtract the mean label-word logits of unlabeled prompts.

        Small instruction models prefer one label word whatever the input; removing that prior uses the inputs
        only, never their labels. Run it on the N = 1 teacher (or with the adapter disabled).
        """
        self.calibration = None
        was_training = model.training
        model.eval()
        logits = [self.logits(model, self.collate(examples[i:i + batch_size])) for i in range(0, len(examples),
                                                                                                batch_size)]
        model.train(was_training)
        self.calibration = torch.cat(logits).mean(0)  # (C,)
        return self.calibration

    def set_calibration(self, values) -> None:
        """Use a saved calibration (what ``calibrate`` computed in training) instead of computing one.

        Raises:
            ValueError: unless ``values`` holds one finite number per class.
        """
        vector = torch.as_tensor(values, dtype=torch.float32) if not torch.is_tensor(values) else values.detach()
        if vector.shape != (len(self.task.label_names),) or not bool(torch.isfinite(vector).all()):
            raise ValueError(f"A calibration needs one finite value per class of {self.task.name!r} "
                             f"({len(self.task.label_names)}), got {values!r}.")
        self.calibration = vector

    def positions(self, batch):
        return batch["attention_mask"].sum(-1) - 1


class Seq2SeqLabelWordHead(ClassificationHead):
    """Encoder-decoders: the decoder starts from one shared token; label words are scored at decoder position 0."""

    family = "encoder-decoder"

    def __init__(self, tokenizer, task, max_length: int = 128, decoder_start_token_id: int = 0):
        super().__init__(tokenizer, task, max_length)
        self.start = decoder_start_token_id
        self.label_ids = torch.tensor([tokenizer(w, add_special_tokens=False)["input_ids"][0]
                                       for w in task.label_words])
        if len(set(self.label_ids.tolist())) != len(task.label_words):
            raise ValueError(f"The label words {task.label_words} share their first token in this tokenizer; "
                             "choose label words that start differently.")

    def inputs(self, examples):
        texts = [e.text if e.text_pair is None else f"{e.text} {self.tokenizer.sep_token or '|'} {e.text_pair}"
                 for e in examples]
        return [f"{self.task.instruction} {t}" for t in texts], None

    def encode(self, examples):
        encoded = super().encode(examples)
        encoded.pop("token_type_ids", None)
        encoded["decoder_input_ids"] = torch.full((len(examples), 1), self.start, dtype=torch.long)
        return encoded

    def logits(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = model(**inputs).logits  # (B, T_dec, V)
        return out[:, -1, self.label_ids.to(out.device)]  # (B, C)

    def positions(self, batch):
        return torch.full((len(batch["input_ids"]),), batch["decoder_input_ids"].shape[1] - 1, dtype=torch.long)


def head_for(model, tokenizer, task: TaskSpec, max_length: int = 128, chat_template: bool = False
             ) -> ClassificationHead:
    """The classification head for ``model``'s family (see the table in the module docstring). ``chat_template``:
    a label-word decoder's prompt is a user turn in the tokenizer's chat template (when it has one)."""
    hf = unwrap(model)
    config = hf.config
    if getattr(config, "is_encoder_decoder", False):
        start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.pad_token_id
        return Seq2SeqLabelWordHead(tokenizer, task, max_length, decoder_start_token_id=start or 0)
    if type(hf).__name__.endswith("ForSequenceClassification"):
        reads = sequence_classifier_reads(hf)
        if reads == "all":
            raise ValueError(f"revmux does not know which position {type(hf).__name__}'s head reads: it is neither a "
                             "transformers decoder classifier (last non-pad token) nor an encoder listed in "
                             "revmux.tuner.architectures.CLS_HEAD_MODELS. Use a causal LM with label words, or "
                             "report the model.")
        return SequenceClassifierHead(tokenizer, task, max_length, reads, config.get_text_config().pad_token_id)
    if hf.get_output_embeddings() is not None:
        return LabelWordHead(tokenizer, task, max_length, chat_template=chat_template)
    raise ValueError(f"Cannot classify with {type(hf).__name__}: use a *ForSequenceClassification encoder, a causal "
                     "LM or a seq2seq LM.")

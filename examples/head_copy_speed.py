"""What a trained head copy (``--train_head``) costs at inference, side by side: one saved adapter with its head copy
(PEFT's ModulesToSaveWrapper around the classifier) against the same adapter with the copy's weights placed directly
where the wrapper was (no wrapper). Alternating rounds, one batch of random tokens, the median per variant.

    python examples/head_copy_speed.py runs/plain/n2/adapter [--batch 64 --length 64 --rounds 15]
"""

import argparse
import statistics
import time

import torch
from peft import PeftModel
from peft.utils.other import ModulesToSaveWrapper
from transformers import AutoModelForSequenceClassification

import revmux  # noqa: F401  (registers the PEFT type)


def unwrapped_copy(adapter_dir: str, teacher: str):
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(teacher), adapter_dir).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.modules_to_save["default"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter_dir")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    from peft import PeftConfig

    teacher = PeftConfig.from_pretrained(args.adapter_dir).base_model_name_or_path
    wrapped = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(teacher),
                                        args.adapter_dir).eval()
    assert any(isinstance(m, ModulesToSaveWrapper) for m in wrapped.modules()), "this adapter has no head copy"
    plain = unwrapped_copy(args.adapter_dir, teacher)
    ids = torch.randint(1000, 20000, (args.batch, args.length))  # (B, T)
    mask = torch.ones_like(ids)
    times = {"head copy (wrapper)": [], "same weights, no wrapper": []}
    variants = dict(zip(times, (wrapped, plain)))
    with torch.inference_mode():
        assert torch.equal(wrapped(input_ids=ids, attention_mask=mask).logits,
                           plain(input_ids=ids, attention_mask=mask).logits)
        for _ in range(args.rounds):
            for name, model in variants.items():
                started = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["same weights, no wrapper"])
    for name, values in times.items():
        print(f"{name:26} median {1000 * statistics.median(values):7.1f} ms  ratio {statistics.median(values) / base:.3f}")


if __name__ == "__main__":
    main()

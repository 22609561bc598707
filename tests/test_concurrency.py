"""One model, many threads: every output equals the sequential run (no per-call state is shared between callers)."""

import threading

import pytest
import torch
from conftest import make_batch, make_muxed

from revmux.serve.inference import MuxClassifier
from revmux.tiny import tiny_model, tiny_tokenizer

THREADS, CALLS = 4, 100
# (batch size, length) per thread: different B and T, B not a multiple of N = 2 included
SHAPES = [(5, 9), (8, 6), (3, 12), (6, 4)]


def _run_threads(work, n_threads: int = THREADS) -> list:
    """Run ``work(i)`` in ``n_threads`` threads started together; re-raise the first error."""
    barrier, results, errors = threading.Barrier(n_threads), [None] * n_threads, []

    def target(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _check_forwards(model, batches: list, forward) -> None:
    with torch.no_grad():
        expected = [forward(model, b) for b in batches]  # sequential reference

        def work(i):
            return [forward(model, batches[i]) for _ in range(CALLS)]

        for i, outputs in enumerate(_run_threads(work)):
            for out in outputs:
                assert out.shape == expected[i].shape
                assert torch.equal(out, expected[i]), f"thread {i}: output differs from the sequential run"


@pytest.mark.parametrize("name, composite", [("bert-seqcls", "blocks"), ("llama-seqcls", "blocks"),
                                             ("t5-seq2seq", "blocks"), ("bert-seqcls", "basis"), ("llama-seqcls", "basis")])
def test_threads_get_their_own_outputs(name, composite):
    model = make_muxed(name, composite=composite)
    batches = [make_batch(name, batch_size=b, length=t, seed=i) for i, (b, t) in enumerate(SHAPES)]
    _check_forwards(model, batches, lambda m, b: m(**b).logits)


def test_threads_generate_their_own_continuations():
    model = make_muxed("llama-causal")
    # generate needs equal-length prompts (no padding) on a multiplexed decoder
    batches = [{"input_ids": make_batch("llama-causal", batch_size=b, length=t, seed=i)["input_ids"].clamp_min(3)}
               for i, (b, t) in enumerate(SHAPES)]
    for b in batches:
        b["attention_mask"] = torch.ones_like(b["input_ids"])
    _check_forwards(model, batches, lambda m, b: m.generate(**b, max_new_tokens=3, do_sample=False,
                                                            pad_token_id=0))


def test_mux_classifier_from_threads():
    tokenizer = tiny_tokenizer()
    import revmux

    base = tiny_model("tiny-bert", len(tokenizer))
    torch.manual_seed(0)
    model = revmux.get_revmux_model(base, revmux.RevMuxConfig(task_type="SEQ_CLS", compose_size=2,
                                                              combine_first=2)).eval()
    classify = MuxClassifier(model, tokenizer, task="sst-2", batch_size=4)
    words = "the movie was good bad great awful dull funny boring best worst film story".split()
    texts = [[" ".join(words[(i * 7 + j) % len(words):][: 2 + (i + j) % 6]) or "film" for j in range(3 + 2 * i)]
             for i in range(THREADS)]
    expected = [classify(t) for t in texts]

    def work(i):
        return [classify(texts[i]) for _ in range(CALLS // 4)]

    for i, outputs in enumerate(_run_threads(work)):
        for out in outputs:
            assert None not in out and out == expected[i]

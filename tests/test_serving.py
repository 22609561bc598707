"""What serving needs travels with the adapter: the teacher it was trained on (adapter_config.json, so PEFT's
AutoPeftModel* loads it), and task, labels, max_length and a decoder's calibration (revmux_serving.json), used by
``MuxClassifier.from_pretrained`` and ``revmux eval``."""

import argparse
import json
import random
from pathlib import Path

import pytest
import torch
from test_cli import write_sentiment_tsvs

import revmux
from revmux import workflow
from revmux.cli import main
from revmux.serve.inference import MuxClassifier
from revmux.serve.serving import SERVING_FILE, ServingInfo, ServingInfoError
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train.data import TASKS, load_task


def _train(tmp_path, model, *extra, drop_test=False, save_dir=None):
    data = write_sentiment_tsvs(tmp_path / "data")
    if drop_test:  # no labeled test file: the held-out split is carved from (shuffled) train
        (data / "test.tsv").unlink()
    save = tmp_path / "run" if save_dir is None else save_dir
    main(["train", "--task_name", "sst-2", "--model_name", model, "--batch_size", "16", "--n_epochs", "1",
          "--combine_first", "2", "--compose_size", "2", "--data_dir", str(data), "--save_dir", str(save),
          "--teacher_lr", "1e-3", "--pairings", "2", "--no_checkpoints", *extra])
    return data, save


def test_autopeft_loads_the_teacher_the_adapter_was_trained_on(tmp_path, monkeypatch):
    from peft import AutoPeftModelForSequenceClassification

    captured = {}
    evaluate_run = workflow.evaluate_run

    def capture(config, muxed, head, task, splits):
        captured.update(muxed=muxed, head=head, dev=splits["dev"])
        return evaluate_run(config, muxed, head, task, splits)

    monkeypatch.setattr(workflow.run, "evaluate_run", capture)
    monkeypatch.chdir(tmp_path)
    _, save = _train(tmp_path, "tiny-bert", save_dir=Path("run"))  # relative: the recorded path must not be
    save = tmp_path / "run"
    config = json.loads((save / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((save / "teacher").resolve())

    monkeypatch.chdir("/")
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(str(save / "adapter")).eval()
    batch = captured["head"].encode(captured["dev"][:8])
    with torch.no_grad():
        expected = captured["muxed"].eval()(**batch).logits
        got = loaded(**batch).logits
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        with loaded.disable_adapter(), captured["muxed"].disable_adapter():  # the teacher itself, head included
            torch.testing.assert_close(loaded(**batch).logits, captured["muxed"](**batch).logits, rtol=0, atol=1e-6)


def test_muxclassifier_reproduces_revmux_eval_on_a_decoder_adapter(tmp_path, monkeypatch):
    data, save = _train(tmp_path, "tiny-llama", "--max_length", "24", drop_test=True)
    info = ServingInfo.load(save / "adapter")
    assert info.family == "decoder" and info.max_length == 24 and info.label_names == ("0", "1")
    assert info.calibration is not None and len(info.calibration) == 2

    heads = []
    evaluate = workflow.evaluation.evaluate

    def spy(model, head, *args, **kwargs):
        heads.append(head)
        return evaluate(model, head, *args, **kwargs)

    monkeypatch.setattr(workflow.evaluation, "evaluate", spy)
    args = argparse.Namespace(task_name="sst-2", adapter_dir=str(save / "adapter"), model_name=None,
                              data_dir=str(data), batch_size=16, pairings=2, max_length=None,
                              max_eval_examples=None, seed=0, output=None)
    evaluated = workflow.evaluate_saved(args)
    assert heads[0].max_length == 24  # the saved one, not the CLI default
    assert heads[0].calibration.tolist() == list(info.calibration)  # as trained, not recomputed on other prompts
    trained = json.loads((save / "metrics.json").read_text())
    assert evaluated["teacher_dev"]["accuracy"] == trained["teacher_dev"]["accuracy"]
    assert evaluated["revmux_dev"]["accuracies"] == trained["revmux_dev"]["accuracies"]

    classify = MuxClassifier.from_pretrained(save / "adapter", batch_size=16)
    assert classify.head.max_length == 24 and classify.head.calibration.tolist() == list(info.calibration)
    dev = load_task("sst-2", data)["dev"]
    order = list(range(len(dev)))
    random.Random(0).shuffle(order)  # eval's first pairing: the same groups of N
    shuffled = [dev[i] for i in order]
    labels = [e.label for e in shuffled]

    def accuracy():
        predictions = classify([e.text for e in shuffled], group_by_length=False)
        return sum(p.label_id == y for p, y in zip(predictions, labels)) / len(labels)

    assert accuracy() == evaluated["revmux_dev"]["accuracies"][0]
    with classify.model.disable_adapter():
        assert accuracy() == evaluated["teacher_dev"]["accuracy"]


def test_explicit_arguments_override_the_saved_ones(tmp_path):
    tokenizer = tiny_tokenizer()
    teacher = tiny_model("tiny-llama", len(tokenizer)).eval()
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    torch.manual_seed(0)
    revmux.get_revmux_model(teacher, revmux.RevMuxConfig(compose_size=2)).save_pretrained(tmp_path / "adapter")
    ServingInfo(task="sst-2", label_names=("0", "1"), max_length=24, family="decoder",
                teacher=str(tmp_path / "teacher"), model_class="LlamaForCausalLM",
                calibration=(0.5, -0.25)).save(tmp_path / "adapter")

    saved = MuxClassifier.from_pretrained(tmp_path / "adapter")
    assert saved.head.max_length == 24 and saved.head.calibration.tolist() == [0.5, -0.25]
    assert saved.task.name == "sst-2"
    overridden = MuxClassifier.from_pretrained(tmp_path / "adapter", max_length=12, calibration=[0.0, 1.0], task="mr")
    assert overridden.head.max_length == 12 and overridden.head.calibration.tolist() == [0.0, 1.0]
    assert overridden.task.name == "mr"  # same labels: allowed
    with pytest.raises(ServingInfoError, match="'rte' has labels"):
        MuxClassifier.from_pretrained(tmp_path / "adapter", task="rte")
    with pytest.raises(ValueError, match="one finite value per class"):
        MuxClassifier.from_pretrained(tmp_path / "adapter", calibration=[1.0, 2.0, 3.0])


def test_serving_info_round_trip_and_errors(tmp_path):
    info = ServingInfo(task="rte", label_names=["entailment", "not_entailment"], max_length=64, family="encoder",
                       teacher="/models/t", run_id="r1")
    info.save(tmp_path)
    assert ServingInfo.load(tmp_path) == info and isinstance(ServingInfo.load(tmp_path).label_names, tuple)
    with pytest.raises(ServingInfoError, match="2 classes"):
        ServingInfo(task="rte", label_names=("a", "b"), max_length=8, family="decoder", teacher="t",
                    calibration=(1.0,))
    with pytest.raises(ServingInfoError, match="max_length must be a positive integer"):
        ServingInfo(task="rte", label_names=("a", "b"), max_length=0, family="encoder", teacher="t")
    (tmp_path / SERVING_FILE).write_text("{not json")
    with pytest.raises(ServingInfoError, match="unreadable"):
        ServingInfo.load(tmp_path)
    empty = tmp_path / "plain"
    empty.mkdir()
    (empty / "adapter_config.json").write_text("{}")
    with pytest.raises(ServingInfoError, match="not saved by `revmux train`"):
        ServingInfo.load(empty)


def test_a_decoder_served_without_calibration_warns():
    tokenizer = tiny_tokenizer()
    model = tiny_model("tiny-llama", len(tokenizer)).eval()
    with pytest.warns(UserWarning, match="without calibration"):
        MuxClassifier(model, tokenizer, "sst-2")
    bert = tiny_model("tiny-bert", len(tokenizer)).eval()
    with pytest.raises(ValueError, match="takes no calibration"):
        MuxClassifier(bert, tokenizer, "sst-2", calibration=[0.0, 0.0])
    classifier = MuxClassifier(model, tokenizer, "sst-2", calibration=torch.tensor([0.1, 0.2]))
    assert classifier(["good"])[0].label in TASKS["sst-2"].names


CHAT = "{% for m in messages %}[CLS] {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} [SEP]{% endif %}"


def test_a_chat_prompt_is_served_as_it_was_trained(tmp_path):
    """revmux_serving.json's chat_template: MuxClassifier builds the same prompt as training did."""
    from revmux.train.heads import LabelWordHead

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT
    teacher = tiny_model("tiny-llama", len(tokenizer)).eval()
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    torch.manual_seed(0)
    revmux.get_revmux_model(teacher, revmux.RevMuxConfig(compose_size=2)).save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    for chat in (True, False):
        ServingInfo(task="sst-2", label_names=("0", "1"), max_length=24, family="decoder",
                    teacher=str(tmp_path / "teacher"), calibration=(0.0, 0.0), chat_template=chat).save(
                        tmp_path / "adapter")
        served = MuxClassifier.from_pretrained(tmp_path / "adapter")
        trained = LabelWordHead(tokenizer, TASKS["sst-2"], 24, chat_template=chat)
        example = load_task("sst-2", write_sentiment_tsvs(tmp_path / "data"))["dev"][0]
        assert served.head.chat is chat
        assert served.head.prompt(example) == trained.prompt(example)
        assert served.head.prompt(example).startswith("[CLS]") is chat
    info = json.loads((tmp_path / "adapter" / SERVING_FILE).read_text())
    del info["chat_template"]  # written before the field: plain prompts, as then
    (tmp_path / "adapter" / SERVING_FILE).write_text(json.dumps(info))
    assert ServingInfo.load(tmp_path / "adapter").chat_template is False


def test_chat_template_option():
    from revmux.errors import RunError
    from revmux.workflow import RunConfig
    from revmux.workflow.teacher import uses_chat_template

    plain, chat = tiny_tokenizer(), tiny_tokenizer()
    chat.chat_template = CHAT

    def config(value):
        return RunConfig(task_name="sst-2", model_name="tiny-llama", data_dir="", save_dir="x", chat_template=value)

    assert uses_chat_template(config("auto"), chat) and not uses_chat_template(config("auto"), plain)
    assert not uses_chat_template(config("off"), chat) and uses_chat_template(config("on"), chat)
    with pytest.raises(RunError, match="has no chat template"):
        uses_chat_template(config("on"), plain)
    with pytest.raises(RunError, match="chat_template must be one of"):
        config("yes")

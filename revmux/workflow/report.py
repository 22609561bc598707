"""Step 7, report: the result table a run prints and its training curves (teacher and adapter)."""

from __future__ import annotations

from pathlib import Path


def print_table(metrics: dict) -> None:
    rows = [("split", "teacher (N=1)", f"revmux (N={metrics['config']['compose_size']}, "
                                        f"{metrics['config']['pairings']} pairings)")]
    for split in ("dev", "heldout"):
        t, r = metrics[f"teacher_{split}"], metrics[f"revmux_{split}"]
        rows.append((split, f"{100 * t['accuracy']:.2f}",
                     f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f}"))
    if "speedup" in metrics:
        s = metrics["speedup"]
        rows.append(("speed-up", "1.00x", f"{s['speedup']:.2f}x (ceiling {s['ceiling']:.2f}x; "
                                          f"{s.get('device', 'cpu')}, batch {s['batch_size']} x {s['length']} tokens)"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in width))


def plot_curves(log_history: list[dict], teacher_log: list[dict], path: Path,
                validation: list[dict] | None = None, title: str = "",
                teacher_validation: list[dict] | None = None) -> None:
    """Training curves as a PNG, one panel each: teacher fine-tuning loss (when trained), the adapter's loss terms,
    and the validation accuracy per epoch of the adapter and of the teacher (when fine-tuned with validation);
    skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[revmux] matplotlib is not installed: no training_curve.png (pip install 'revmux[plot]')")
        return
    shown = {"teacher": any("loss" in h for h in teacher_log), "adapter": True,
             "validation": bool(validation or teacher_validation)}
    panels = [p for p in ("teacher", "adapter", "validation") if shown[p]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "teacher":
            points = [(h["step"], h["loss"]) for h in teacher_log if "loss" in h]
            ax.plot(*zip(*points), marker=".", label="cross-entropy")
            ax.set(title="teacher fine-tuning (N=1)", xlabel="step", ylabel="loss")
        elif panel == "adapter":
            for key, label in (("loss", "total"), ("loss_ce", "CE"), ("loss_info_nce", "InfoNCE"),
                               ("loss_orthogonality", "orthogonality")):
                points = [(h["step"], h[key]) for h in log_history if key in h]
                if points:
                    ax.plot(*zip(*points), marker=".", label=label)
            ax.set(title="adapter training", xlabel="step", ylabel="loss")
        else:
            for history, label in ((teacher_validation, "teacher (N=1)"), (validation, "RevMUX (1 pairing)")):
                if history:
                    ax.plot([h["epoch"] for h in history], [100 * h["accuracy"] for h in history], marker="o",
                            label=label)
            ax.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


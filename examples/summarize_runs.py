"""Print a markdown table of `revmux train` runs: python examples/summarize_runs.py runs/convergence/*/metrics.json"""

import json
import sys
from pathlib import Path


def row(path: Path) -> str:
    m = json.loads(path.read_text())
    c, t = m["config"], m.get("training", {})

    def pct(split, who):
        r = m[f"{who}_{split}"]
        return f"{100 * r['accuracy']:.2f}" if who == "teacher" else \
            f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f}"

    gap = [100 * (m[f"revmux_{s}"]["accuracy"] - m[f"teacher_{s}"]["accuracy"]) for s in ("dev", "heldout")]
    best = t.get("best_validation")
    return (f"| {c['model_type']} | {c['compose_size']} | {t.get('epochs_run', c['n_epochs']):.0f} "
            f"(best {t.get('best_epoch') or 0:.0f}) | {100 * best:.2f} | " if best is not None else
            f"| {c['model_type']} | {c['compose_size']} | {c['n_epochs']} | – | ") + \
        (f"{pct('dev', 'teacher')} | {pct('dev', 'revmux')} | {pct('heldout', 'teacher')} | "
         f"{pct('heldout', 'revmux')} | {gap[0]:+.2f} / {gap[1]:+.2f} | {m['adapter_seconds'] / 60:.1f} |")


if __name__ == "__main__":
    print("| adapter | N | epochs run (best) | validation | dev: teacher | dev: RevMUX | held-out: teacher | "
          "held-out: RevMUX | gap dev / held-out | adapter min |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))

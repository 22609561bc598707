"""The table of examples/encoder_levers.sh: per row, dev and held-out accuracy over its pairings and the gap to the
teacher, the best validation epoch and the epochs run. A row that has not finished shows the validation accuracies its
log printed so far.

    python examples/encoder_levers_table.py runs/levers [--json out.json]
"""

import argparse
import json
import re
from pathlib import Path


def row(folder: Path) -> dict:
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        log = folder.parent / f"{folder.name}.log"  # (row names hold dots: not with_suffix)
        seen = re.findall(r"epoch (\d+): validation accuracy ([\d.]+)", log.read_text()) if log.is_file() else []
        return {"row": folder.name, "finished": False, "validation": [float(a) for _, a in seen]}
    m = json.loads(metrics_file.read_text())
    facts = m["training"]
    out = {"row": folder.name, "finished": True, "N": m["config"]["compose_size"],
           "validation": [round(100 * h["accuracy"], 2) for h in facts["validation_history"]],
           "best_epoch": facts["best_epoch"], "epochs_run": facts["epochs_run"],
           "train_seconds": round(facts["train_seconds"])}
    for split in ("dev", "heldout"):
        student, teacher = m[f"revmux_{split}"], m[f"teacher_{split}"]
        out[split] = round(100 * student["accuracy"], 2)
        out[f"{split}_std"] = round(100 * student["accuracy_std"], 2)
        out[f"teacher_{split}"] = round(100 * teacher["accuracy"], 2)
        out[f"{split}_gap"] = round(out[split] - out[f"teacher_{split}"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("save", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = [row(f) for f in sorted(p for p in args.save.iterdir() if p.is_dir())]
    print(f"{'row':24} {'dev':>14} {'gap':>6} {'held-out':>14} {'gap':>6} {'best/run':>9}  validation by epoch")
    for r in rows:
        if not r["finished"]:
            print(f"{r['row']:24} {'(unfinished)':>14} {'':6} {'':14} {'':6} {'':9}  {r['validation']}")
            continue
        print(f"{r['row']:24} {r['dev']:>7.2f} ± {r['dev_std']:<4.2f} {r['dev_gap']:>+6.2f} "
              f"{r['heldout']:>7.2f} ± {r['heldout_std']:<4.2f} {r['heldout_gap']:>+6.2f} "
              f"{r['best_epoch']:>4.0f}/{r['epochs_run']:<4.0f}  {r['validation']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

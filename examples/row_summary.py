"""Keep a `revmux train` row's numbers and validation curve in the repository (runs/ is not committed):
python examples/row_summary.py runs/dec/zs_basis_n2 docs/results/issue29/zs_basis_n2.json"""

import json
import sys
from pathlib import Path

KEEP = ("teacher_dev", "revmux_dev", "teacher_heldout", "revmux_heldout", "config", "family", "combine_first",
        "adapter_seconds", "teacher_seconds")

if __name__ == "__main__":
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    metrics = json.loads((run / "metrics.json").read_text())
    summary = {key: metrics[key] for key in KEEP if key in metrics}
    training = metrics.get("training", {})
    summary["training"] = {k: v for k, v in training.items() if k not in ("cache_paths",)}
    command = run.parent / f"{run.name}.cmd"
    if command.is_file():
        summary["command"] = command.read_text().strip()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}")

"""Write a small synthetic "support tickets" data set for docs/own-data.md: three string labels, CSV and JSON Lines.

    python examples/make_tickets.py data/tickets

writes ``train.csv`` (600 rows), ``dev.csv`` (150), ``test.csv`` (150) with columns ``ticket_id,text,label``
(labels ``complaint``, ``praise``, ``question``), and ``new.jsonl`` (1,000 unlabeled rows, ``{"ticket_id", "text"}``)
to predict. The words come from the tiny models' vocabulary, so ``--model_name tiny-bert`` reads them too.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

FILLER = "the a this that it is was movie film story review one two and but".split()
CUES = {"complaint": "bad awful worst hate boring dull".split(),
        "praise": "good great best love funny fine".split(),
        "question": "does do question ? answer mean".split()}


def ticket(rng: random.Random, label: str) -> str:
    words = rng.choices(FILLER, k=rng.randint(3, 12)) + rng.choices(CUES[label], k=rng.randint(1, 3))
    rng.shuffle(words)
    return " ".join(words)


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    labels = sorted(CUES)
    number = 0
    for name, rows in (("train", 600), ("dev", 150), ("test", 150)):
        with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["ticket_id", "text", "label"])
            for _ in range(rows):
                label = rng.choice(labels)
                writer.writerow([f"T{number:05d}", ticket(rng, label), label])
                number += 1
    with open(out / "new.jsonl", "w", encoding="utf-8") as f:
        for _ in range(1000):
            f.write(json.dumps({"ticket_id": f"T{number:05d}", "text": ticket(rng, rng.choice(labels))}) + "\n")
            number += 1
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/tickets")

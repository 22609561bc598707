"""``python -m revmux ...`` (also what ``accelerate launch -m revmux train ...`` runs)."""

import sys

from revmux.cli import main

sys.exit(main())

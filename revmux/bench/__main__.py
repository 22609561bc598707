"""``python -m revmux.bench``: the ``revmux bench`` command."""

import argparse

from revmux.bench import __doc__ as _doc
from revmux.bench import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m revmux.bench", description=_doc.split("\n\n")[0])
add_arguments(parser)
main(parser.parse_args())

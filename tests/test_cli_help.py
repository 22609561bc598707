"""`revmux --help` and every subcommand's help: plain text, each ending with an example command that parses."""

import re
import shlex

import pytest

from revmux.cli import EXAMPLES, build_parser

MARKUP = re.compile(r"``|`[^`\s][^`]*`|:(class|func|meth|mod|attr):|^\.\. ", re.MULTILINE)


def _subparsers():
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)]
    return parser, action.choices


def test_top_level_help_is_plain_text():
    parser, commands = _subparsers()
    text = parser.format_help()
    assert not MARKUP.search(text), MARKUP.search(text).group(0)
    assert set(commands) == set(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_subcommand_help_is_plain_and_ends_with_an_example_that_parses(name):
    parser, commands = _subparsers()
    text = commands[name].format_help()
    found = MARKUP.search(text)
    assert found is None, f"reST markup in `revmux {name} --help`: {found.group(0)!r}"
    last = " ".join(text.strip().split("\n\n")[-1].split())  # the last paragraph (argparse wraps it)
    assert last == f"example: {EXAMPLES[name]}"
    args = parser.parse_args(shlex.split(EXAMPLES[name])[1:])
    assert args.command == name


def test_the_markup_check_can_fail():
    assert MARKUP.search("the ``revmux`` command") and MARKUP.search("see :class:`RevMuxConfig`")
    assert not MARKUP.search("revmux train --composite basis (default: auto)")

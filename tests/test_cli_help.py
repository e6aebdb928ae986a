"""Every command's --help, `train PHASE --help` included: each option explained with its default,
no reST markup from docstrings, no description or summary cut mid-sentence."""
import argparse
import re
import subprocess
import sys

import pytest

from lift_localizer.cli import build_parser
from lift_localizer.commands import HelpFormatter

MARKUP = re.compile(r"``|:(func|class|meth|mod|attr|data|obj|exc|ref|doc):`")


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


PARSERS = list(walk(build_parser()))
IDS = [" ".join(path) or "lift-localizer" for path, _ in PARSERS]


def own_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The one-line help of each sub-command, as `COMMAND --help` lists them."""
    return {c.dest: c.help for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for c in a._get_subactions()}


def balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in PARSERS}
    assert {"extract", "build-map", "localize", "evaluate", "benchmark-node", "demo", "train joint",
            "train det-stable", "train netvlad"} <= names


@pytest.mark.parametrize("path,parser", PARSERS, ids=IDS)
def test_every_option_and_command_has_help(path, parser):
    assert isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class, HelpFormatter)
    for action in own_actions(parser):
        assert action.help and action.help.strip(), f"{' '.join(path)} {action.option_strings or action.dest}: no help"
    for name, text in summaries(parser).items():
        assert text and text.strip(), f"{' '.join(path)} {name}: no summary"


@pytest.mark.parametrize("path,parser", PARSERS, ids=IDS)
def test_help_shows_no_rest_markup(path, parser):
    text = parser.format_help()
    assert not MARKUP.search(text), MARKUP.search(text).group(0)


@pytest.mark.parametrize("path,parser", PARSERS, ids=IDS)
def test_defaults_are_shown(path, parser):
    formatter = parser._get_formatter()
    for action in own_actions(parser):
        d = action.default
        if not action.option_strings or d is None or d is False or d == argparse.SUPPRESS or d == []:
            continue
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        text = formatter._expand_help(action)
        # The value itself, or (default: …) in words where the value would not say it ("auto": detected).
        assert shown in text or "default:" in text, f"{' '.join(path)} {action.option_strings[0]}: {text!r}"


@pytest.mark.parametrize("path,parser", PARSERS, ids=IDS)
def test_descriptions_and_summaries_are_whole(path, parser):
    if path:  # the sub-commands; the top level's is the module docstring
        assert parser.description, f"{' '.join(path)}: no description"
    if parser.description:
        description = " ".join(parser.description.split())
        assert description[-1] in ".)!", f"{' '.join(path)}: description ends {description[-40:]!r}"
        assert balanced(description), f"{' '.join(path)}: unbalanced parentheses"
    for name, text in summaries(parser).items():
        assert balanced(text), f"{' '.join((*path, name))}: summary cut: {text!r}"
    for action in own_actions(parser):
        assert balanced(action.help), f"{' '.join(path)} {action.option_strings}: {action.help!r}"


def test_train_joint_help_is_whole():
    r = subprocess.run([sys.executable, "-m", "lift_localizer", "train", "--help"], capture_output=True, text=True,
                       check=True)
    listed = re.search(r"^ +joint +(.*?)\n +det-stable", r.stdout, re.M | re.S)
    assert listed and " ".join(listed.group(1).split()) == "DET, ORI and DESC together on LIFT's global cost"
    r = subprocess.run([sys.executable, "-m", "lift_localizer", "train", "joint", "--help"], capture_output=True,
                       text=True, check=True)
    assert "(default: the shipped weights)" in " ".join(r.stdout.split())


def test_formatter_keeps_lists_and_examples():
    parser = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter, description=(
        "``x`` and :func:`y` read as code.\n\nPrints:\n- one item\n  continued;\n- another.\nAfter the list.\n\n"
        "    an example  --kept as written\n"))
    text = parser.format_help()
    assert "`x` and `y` read as code." in text
    assert "Prints:\n- one item continued;\n- another.\nAfter the list." in text
    assert "    an example  --kept as written" in text

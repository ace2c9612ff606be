"""Every `ros2 bag play` / `ros2 bag convert` command the README, the docs and the bag tool's help
give is one that distribution's rosbag2 accepts.

The models below are the verbs' argument definitions as read in ros2/rosbag2's sources: Humble
(branch humble, ros2bag/verb/play.py, api/__init__.py add_standard_reader_args: one positional
`bag_path`); Jazzy (backport), Kilted and Rolling after PR #1848 (`bag_path` optional, `-i/--input`
repeated, "do not mix the [bag_path] positional argument and the -i,--input option"); convert
(`-i` repeated, `-o` an output-options YAML) since Humble. Only the options the docs use are
modelled; a command with another one fails here until it is added from the sources.
"""

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from depthclip_ros.bag import cli

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = ("humble", "jazzy", "kilted", "rolling")
SINCE_JAZZY = ("jazzy", "kilted", "rolling")


def play_parser(distro: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros2 bag play", add_help=False)
    if distro == "humble":
        parser.add_argument("bag_path")
        parser.add_argument("-s", "--storage")
    else:
        parser.add_argument("bag_path", nargs="?")
        parser.add_argument("-i", "--input", action="append", nargs="+")
    parser.add_argument("-r", "--rate", type=float)
    parser.add_argument("--topics", nargs="+")
    parser.add_argument("-l", "--loop", action="store_true")
    parser.add_argument("--clock", type=float, nargs="?", const=40)
    parser.add_argument("-d", "--delay", type=float)
    parser.add_argument("-p", "--start-paused", action="store_true")
    parser.add_argument("-m", "--remap", nargs="+")
    return parser


def convert_parser(distro: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros2 bag convert", add_help=False)
    parser.add_argument("-i", "--input", required=True, action="append", nargs="+")
    parser.add_argument("-o", "--output-options", required=True)
    return parser


def accepts(distro: str, command: str) -> bool:
    words = shlex.split(command)
    verb, argv = words[2], words[3:]
    parser = play_parser(distro) if verb == "play" else convert_parser(distro)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit:
        return False
    if verb == "play" and distro != "humble":  # ros2bag's own check after parsing
        return bool(args.bag_path) != bool(args.input)
    return True


def labelled(text: str) -> tuple:
    """The distributions a piece of text says a command is for (none named: all)."""
    if re.search(r"Jazzy(,| and) (later|Kilted)", text):
        return SINCE_JAZZY
    if "Humble" in text:
        return ("humble",)
    return DISTRIBUTIONS


def bag_tool_help() -> str:
    """Every subcommand's --help, unwrapped (argparse wraps at the terminal's width)."""
    parser = cli.build_parser()
    (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "1000")
        return "\n".join(p.format_help() for p in subcommands.choices.values())


COMMAND = re.compile(r"ros2 bag (?:play|convert)[^`\n;()#]*")


def documented_commands() -> list:
    """(where, command, distributions) of every ros2 bag play/convert command: code lines with
    the comment above them, prose and help text with their own sentence."""
    found = []
    texts = {p.name: p.read_text() for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")]}
    texts["depthclip-bag --help"] = bag_tool_help()
    for name, text in texts.items():
        comment = ""
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                comment = stripped
            for match in COMMAND.finditer(line):
                command = match.group(0).strip().rstrip(".,")
                context = comment if stripped.startswith("ros2 bag") else line
                found.append((name, command, labelled(context)))
            if stripped and not stripped.startswith("#"):
                comment = "" if stripped.startswith("ros2 bag") else comment
    return found


def test_the_models_refuse_what_rosbag2_refuses():
    for distro in DISTRIBUTIONS:
        assert not accepts(distro, "ros2 bag play IN OUT")  # the command once in these docs
    assert accepts("humble", "ros2 bag play IN --clock")
    assert not accepts("humble", "ros2 bag play -i IN -i OUT")
    assert accepts("jazzy", "ros2 bag play -i IN -i OUT --clock")
    assert not accepts("jazzy", "ros2 bag play IN -i OUT")  # no mixing
    assert accepts("humble", "ros2 bag convert -i A -i B -o merge.yaml")


def test_every_documented_bag_command_is_accepted_where_the_docs_say():
    commands = documented_commands()
    assert len(commands) >= 6
    assert any("-i" in c and d == SINCE_JAZZY for _, c, d in commands)
    assert any("convert" in c and d == ("humble",) for _, c, d in commands)
    for where, command, distros in commands:
        if command in ("ros2 bag play", "ros2 bag convert"):
            continue  # prose naming the verb, not a command
        if "play" in command and not re.search(r"play (\S+ )*(-i )?[\w./-]*(bag|IN)", command):
            command = command.replace("play", "play BAG", 1)  # prose naming an option
        for distro in distros:
            assert accepts(distro, command), f"{where}: {command!r} on {distro}"


@pytest.mark.parametrize("distro", DISTRIBUTIONS)
def test_a_full_copy_plays_alone_everywhere(distro):
    assert accepts(distro, "ros2 bag play my_bag_depth --clock")

"""The ``mdvi-lab`` command line: one subcommand per entry of :mod:`experiments.registry`.

Options are typed by tyro from each command's config dataclass (``mdvi-lab CMD --help``).
Every expected failure (bad input, a missing or damaged run, a folder that already holds a
run, an unwritable output) ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import sys

from experiments.registry import BY_NAME, COMMANDS

# Failures a user can cause and fix; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, OSError)


def _usage() -> str:
    lines = ["usage: mdvi-lab {" + ",".join(BY_NAME) + "} [options]", ""]
    lines += [f"  {command.name:<20} {command.description}" for command in COMMANDS]
    lines += ["", "Run `mdvi-lab <command> --help` for a command's options."]
    return "\n".join(lines)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_BOX = str.maketrans("", "", "╭╮╰╯│─━┃┏┓┗┛")


def _parse(command, config_cls, rest):
    """tyro's parse, with its boxed error panel folded into one line (exit code 2)."""
    import io

    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(config_cls, args=rest, prog=f"mdvi-lab {command.name}", description=command.description)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            lines = [" ".join(line.translate(_BOX).split()) for line in captured.getvalue().splitlines()]
            lines = [line for line in lines if line and not line.startswith("For full helptext")]
            print(f"mdvi-lab {command.name}: error: {'; '.join(lines) or 'bad arguments'}", file=sys.stderr)
            raise SystemExit(2) from None
        sys.stderr.write(captured.getvalue())
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BY_NAME:
        print(f"mdvi-lab: unknown command {name!r}; known commands: {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    command = BY_NAME[name]
    config_cls, run = command.load()
    try:
        config = _parse(command, config_cls, rest)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    except EXPECTED_ERRORS as error:  # a config's own validation, run by its __post_init__
        print(f"mdvi-lab {name}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    try:
        run(config)
    except EXPECTED_ERRORS as error:
        print(f"mdvi-lab {name}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mdvi-lab {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

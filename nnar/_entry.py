"""The `nnar` command's entry point: loads the command line inside a Ctrl-C handler, so that an
interrupt while numpy and the codecs load (a few hundred ms) ends in one line, not a traceback."""

import sys


def main() -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("nnar: interrupted; no output was written", file=sys.stderr)
        return 130
    return run()

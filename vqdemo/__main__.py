import sys

from .runtime import configure


def run() -> int:
    """`python -m vqdemo` and the installed `vqdemo` command: set the process up, then the command line (cli.main)."""
    configure()  # before cli imports torch

    from .cli import main

    return main()


if __name__ == "__main__":   # a job's worker process re-imports this module (spawn) and must not run the CLI
    sys.exit(run())

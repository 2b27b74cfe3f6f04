import sys

from .runtime import configure

if __name__ == "__main__":   # a job's worker process re-imports this module (spawn) and must not run the CLI
    configure()  # before cli imports torch

    from .cli import main

    sys.exit(main())

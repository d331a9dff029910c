"""Run the command line interface with ``python -m xnatio``."""

from xnatio.cli.app import main

if __name__ == "__main__":
    main()

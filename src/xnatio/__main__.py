"""Run the command line interface with ``python -m xnatio``."""

from xnatio.cli import main

if __name__ == "__main__":
    main()

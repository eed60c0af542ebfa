"""python -m ocular: the command line (see ocular.cli)."""
from ocular.cli import main  # the `ocular` console script's entry point too

if __name__ == "__main__":
    raise SystemExit(main())

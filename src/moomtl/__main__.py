"""``python -m moomtl …`` is the ``moomtl`` command (so ``torchrun -m moomtl`` can start it)."""

from moomtl.cli import main

if __name__ == "__main__":
    main()

"""`python -m stress ...`: the same command as `stress ...`."""

from stress.commands import main

if __name__ == "__main__":
    main(prog="python -m stress")

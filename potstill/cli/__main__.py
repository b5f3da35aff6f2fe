"""`python -m potstill.cli` runs the CLI (used by tests that need a separate driver process)."""

from potstill.cli import main

if __name__ == "__main__":
    main()

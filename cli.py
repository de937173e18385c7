#!/usr/bin/env python3
"""The command line's entry point: ``python cli.py ...`` runs the ``cli`` package.

The package of the same name shadows this file for ``import cli``; this file
is only what the README and the demo run.
"""

# test-case-name: tests.cli

from cli import main

if __name__ == "__main__":
    main()

"""The ``ragstore`` command line (installed as the ``ragstore_cli`` package).

Run it as ``ragstore ...`` (console script) or ``python -m ragstore ...``.
See docs/cli.md.
"""

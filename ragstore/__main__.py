"""``python -m ragstore``: the ragstore command line."""

from ragstore_cli.app import main

if __name__ == "__main__":
    main()

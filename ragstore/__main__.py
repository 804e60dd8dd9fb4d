"""``python -m ragstore``: the ragstore command line.

(The ``ragstore`` console script also sets OPENBLAS_NUM_THREADS=1 before numpy
loads; here the package, and numpy with it, is imported first.)
"""

from ragstore_cli.app import main

if __name__ == "__main__":
    main()

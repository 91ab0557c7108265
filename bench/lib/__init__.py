"""What the suites share, one module per purpose (bench/__init__.py lists them). No module here imports a suite,
nor torch at import time: a suite imports them at its top and its ``--help`` stays quick."""

"""The suites of ``python -m bench``, one module each (eval: a package), imported only when their suite runs."""

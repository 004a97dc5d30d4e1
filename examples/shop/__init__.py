"""A tiny shop built on plain SQLAlchemy 2.0 (sync ORM), used as sessionlint's worked example.

Most of the code handles sessions correctly; a handful of functions carry the session bugs
sessionlint exists to catch, each marked with a ``# BUG (SESxxx): ...`` comment (see README.md).
Run it with ``python -m examples.shop``.
"""

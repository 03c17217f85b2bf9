"""contaudit: audit language models for benchmark contamination.

The command line (``contaudit``) is a thin layer over this package. Each pipeline
stage is importable on its own, e.g. ``from contaudit.index import build_index``.
"""

__version__ = "0.1.0"

"""The edgeq version, in a module of its own so that any layer can read it without importing
the package's public API (``edgeq/__init__.py`` re-exports it)."""

__all__ = ["__version__"]

__version__ = "0.1.0"

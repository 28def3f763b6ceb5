"""Coordination layer: event router, daemon manager, sync facade, bootstrap."""

__version__ = "0.1.0"
__all__ = ["__version__"]

"""ix's daemon and the modules the client shares with it."""

#: the one version of ix: pyproject.toml reads it, ixd reports it
__version__ = "0.1.0"

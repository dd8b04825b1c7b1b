"""The installed distribution's version (importlib.metadata: nothing heavy imported)."""

from importlib import metadata

try:
    __version__ = metadata.version("jaxloss")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

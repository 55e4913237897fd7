"""Version numbers: the package's, and the store format's (part of every id's meaning)."""

__version__ = "0.1.0"

# Bumped when the bytes chanbatch writes for the same data change (writer options, manifest
# layout, normalisation). It is part of the engine salt of every cache key.
FORMAT_VERSION = 1

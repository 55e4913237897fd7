"""Version numbers: the package's, and the store format's (part of every id's meaning)."""

__version__ = "0.1.0"

# Bumped when the bytes chanbatch writes for the same data change (writer options, manifest
# layout, normalisation). It is part of the engine salt of every cache key.
FORMAT_VERSION = 1

# Bumped when what a stage computes from the same input changes (a result's values or types),
# though the bytes of frozen data do not: part of the engine salt, so no cached result made by
# an older engine is reused. 2: integer and bool columns with nulls keep their types.
ENGINE_VERSION = 2

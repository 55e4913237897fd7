"""Version numbers: the package's, and the store format's (part of every id's meaning)."""

__version__ = "0.1.0"

# Bumped when the bytes chanbatch writes for the same data change (writer options, manifest
# layout, normalisation). It is part of the engine salt of every cache key.
FORMAT_VERSION = 1

# Bumped when what a stage computes from the same input changes (a result's values or types),
# though the bytes of frozen data do not: part of the engine salt, so no cached result made by
# an older engine is reused. 2: integer and bool columns with nulls keep their types. 3: decimals
# of up to 18 digits are written as Parquet integers (WRITE_OPTIONS), so results holding them
# have new bytes. FORMAT_VERSION, written into every manifest, was left alone: bumping it would
# rename every slice of every store, where only decimal objects changed.
ENGINE_VERSION = 3

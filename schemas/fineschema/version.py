"""The contract's version. Bump on any change a reader must know about."""

SCHEMA_VERSION = 1

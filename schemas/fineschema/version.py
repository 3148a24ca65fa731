"""The contract's version. Bump on any change a reader must know about."""

SCHEMA_VERSION = 2  # 2: boxes, shot, track_score arrays; source_width/height columns; face_found never filled

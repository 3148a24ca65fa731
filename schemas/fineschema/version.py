"""The contract's version. Bump on any change a reader must know about."""

# 2: boxes, shot, track_score arrays; source_width/height columns; face_found never filled
# 3: every readable clip is stored (no_face and few_faces too), manifest column frames_input
SCHEMA_VERSION = 3

"""The contract's version. Bump on any change a reader must know about."""

# 2: boxes, shot, track_score arrays; source_width/height columns; face_found never filled
# 3: every readable clip is stored (no_face and few_faces too), manifest column frames_input;
#    landmark_score array (the mesh's face-presence score on the tracker's window), face_found from it
SCHEMA_VERSION = 3

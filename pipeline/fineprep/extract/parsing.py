"""Face-parsing class maps. `FaceParser` is the interface; `MeshParser` (the default) needs no weights.

`MeshParser` fills polygons of the 478-point face mesh in painting order (skin, nose, brows, eyes,
lips, inner mouth), so later classes cover earlier ones. The polygons are built from mediapipe's
published mesh topology (`FaceLandmarksConnections`): each region's edges are chained into loops.
A learned parser (an 11-class FaceXFormer-style model, say) plugs in by implementing `FaceParser`
with a checkpoint path and mapping its classes onto `fineschema.layout.PARSING_CLASSES`.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np

from fineschema import layout

CLASS = {name: i for i, name in enumerate(layout.PARSING_CLASSES)}
_SHIFT = 4  # fixed-point bits for cv2.fillPoly: sub-pixel polygon vertices


class FaceParser(Protocol):
    """Turns a clip's crops and their landmarks into (T, S, S) uint8 maps indexing PARSING_CLASSES."""

    name: str

    def parse(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...


def _chains(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Order an edge list into its connected chains: closed loops repeat no vertex, open paths run end to end."""
    adj: dict[int, list[int]] = defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen: set[int] = set()
    chains = []
    # Start paths at their ends (degree 1), then whatever is left are loops.
    starts = [v for v in adj if len(adj[v]) == 1] + list(adj)
    for start in starts:
        if start in seen:
            continue
        chain, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            chain.append(cur)
            seen.add(cur)
        chains.append(chain)
    return chains


def _edges(connections) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in connections]


@lru_cache(maxsize=1)
def mesh_regions() -> list[tuple[int, str, list[list[int]]]]:
    """(class value, kind, index lists) in painting order; kind is `poly` (fill loops) or `hull` (convex hull)."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

    def loop(conns) -> list[int]:
        (chain,) = _chains(_edges(conns))
        return chain

    def brow(conns) -> list[int]:
        # Two open chains (upper and lower edge), both running from the outer to the inner end.
        a, b = _chains(_edges(conns))
        return a + b[::-1]

    lips_outer, lips_inner = sorted(_chains(_edges(C.FACE_LANDMARKS_LIPS)), key=lambda ch: 61 not in ch)
    nose = sorted({v for e in _edges(C.FACE_LANDMARKS_NOSE) for v in e})
    return [
        (CLASS["skin"], "poly", [loop(C.FACE_LANDMARKS_FACE_OVAL)]),
        (CLASS["nose"], "hull", [nose]),
        (CLASS["brows"], "poly", [brow(C.FACE_LANDMARKS_LEFT_EYEBROW), brow(C.FACE_LANDMARKS_RIGHT_EYEBROW)]),
        (CLASS["eyes"], "poly", [loop(C.FACE_LANDMARKS_LEFT_EYE), loop(C.FACE_LANDMARKS_RIGHT_EYE)]),
        (CLASS["lips"], "poly", [lips_outer]),
        (CLASS["inner_mouth"], "poly", [lips_inner]),
    ]


class MeshParser:
    """Class maps rasterised from the face mesh; needs no weights, costs well under a millisecond a frame."""

    name = "mesh"

    def parse(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        t, size = crops.shape[0], crops.shape[1]
        out = np.zeros((t, size, size), dtype=np.uint8)
        regions = mesh_regions()
        scale = float(size * (1 << _SHIFT))
        for i in range(t):
            pts = np.round(landmarks[i, :, :2] * scale).astype(np.int32)
            for value, kind, groups in regions:
                if kind == "hull":
                    polys = [cv2.convexHull(pts[g]) for g in groups]
                else:
                    polys = [pts[g] for g in groups]
                cv2.fillPoly(out[i], polys, int(value), lineType=cv2.LINE_8, shift=_SHIFT)
        return out


PARSERS: dict[str, type] = {"mesh": MeshParser}


def get_parser(name: str) -> FaceParser:
    try:
        return PARSERS[name]()
    except KeyError:
        raise ValueError(f"unknown face parser {name!r}; known: {', '.join(PARSERS)}") from None

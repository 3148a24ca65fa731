"""Face-parsing class maps. `FaceParser` is the interface; `MeshParser` (the default) needs no weights.

`MeshParser` fills polygons of the 478-point face mesh in painting order (skin, nose, brows, eyes,
lips, inner mouth), so later classes cover earlier ones. The polygons are built from mediapipe's
published mesh topology (`FaceLandmarksConnections`): each region's edges are chained into loops.
It carries little the landmarks do not, so `FaceXFormerParser` runs the learned parser the
FineCLIPER paper used (11 classes, hair included) from a user's local copy of its public checkpoint.
Each parser declares its class list (`classes`, one of `fineschema.layout.PARSING_CLASS_SETS`);
the store records it with the parser's name and the weights' sha256.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from fineschema import layout

from ..errors import FineprepError

CLASS = {name: i for i, name in enumerate(layout.PARSING_CLASSES)}
_SHIFT = 4  # fixed-point bits for cv2.fillPoly: sub-pixel polygon vertices


class FaceParser(Protocol):
    """Turns a clip's crops and their landmarks into (T, S, S) uint8 maps indexing its `classes`."""

    name: str
    classes: tuple[str, ...]

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
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as Mesh

    def loop(conns) -> list[int]:
        (chain,) = _chains(_edges(conns))
        return chain

    def brow(conns) -> list[int]:
        # Two open chains (upper and lower edge), both running from the outer to the inner end.
        a, b = _chains(_edges(conns))
        return a + b[::-1]

    lips_outer, lips_inner = sorted(_chains(_edges(Mesh.FACE_LANDMARKS_LIPS)), key=lambda ch: 61 not in ch)
    nose = sorted({v for e in _edges(Mesh.FACE_LANDMARKS_NOSE) for v in e})
    return [
        (CLASS["skin"], "poly", [loop(Mesh.FACE_LANDMARKS_FACE_OVAL)]),
        (CLASS["nose"], "hull", [nose]),
        (CLASS["brows"], "poly", [brow(Mesh.FACE_LANDMARKS_LEFT_EYEBROW),
                                  brow(Mesh.FACE_LANDMARKS_RIGHT_EYEBROW)]),
        (CLASS["eyes"], "poly", [loop(Mesh.FACE_LANDMARKS_LEFT_EYE), loop(Mesh.FACE_LANDMARKS_RIGHT_EYE)]),
        (CLASS["lips"], "poly", [lips_outer]),
        (CLASS["inner_mouth"], "poly", [lips_inner]),
    ]


class MeshParser:
    """Class maps rasterised from the face mesh; needs no weights, costs well under a millisecond a frame."""

    name = "mesh"
    classes = layout.PARSING_CLASS_SETS["mesh"]

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


class ParserError(FineprepError, ValueError):
    """A learned parser cannot be set up (no torch, no or unreadable weights): one line, then exit."""


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def _torch():
    try:
        import torch
    except ImportError:
        raise ParserError("--parser facexformer needs torch: install the trainer extra or torch") from None
    return torch


def load_weights(path: str | Path) -> dict:
    """A state dict read without running any pickled code: safetensors, or a .pt/.pth through
    `torch.load(weights_only=True)` (tensors and plain containers only). The public FaceXFormer
    checkpoint keeps its weights under `state_dict_backbone`; a bare state dict is taken as is."""
    path = Path(path)
    if not path.is_file():
        raise ParserError(f"parser weights {path} not found; give --parser-weights the checkpoint file")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ParserError(f"parser weights {path}: only .safetensors or a .pt/.pth state dict are read "
                          "(nothing else is unpickled); convert the checkpoint to safetensors")
    torch = _torch()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file gets one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParserError(f"parser weights {path} could not be read safely ({detail[:200]}); "
                          "give a safetensors file or a .pt holding only tensors") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict_backbone"), dict):
        state = state["state_dict_backbone"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ParserError(f"parser weights {path} hold no state dict of tensors")
    return state


def check_state_dict(state: dict, model, path: str | Path) -> None:
    """Names and shapes must equal the model's exactly (the public checkpoint loads strictly)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or wrong:
        parts = [f"{len(x)} {what} (first: {x[0]}{'' if what != 'with other shapes' else f' {have[x[0]]}'})"
                 for what, x in (("missing", missing), ("unexpected", unexpected), ("with other shapes", wrong))
                 if x]
        raise ParserError(f"parser weights {path} do not fit FaceXFormer: {'; '.join(parts)} keys")
    _check_values(state, model.state_dict(), path)


def _check_values(state: dict, model_state: dict, path: str | Path) -> None:
    """Floating-point tensors where the model has them (an int8 copy would be cast, not dequantised), and no
    NaN or infinity (every parsing map would come out as one class)."""
    torch = _torch()
    for key, want in model_state.items():
        have = state[key]
        if have.is_meta:
            continue
        if want.is_floating_point() and not have.is_floating_point():
            raise ParserError(f"parser weights {path}: {key} is {str(have.dtype).replace('torch.', '')}, not floating "
                              "point; give the float checkpoint (quantised weights are not read)")
        if have.is_floating_point() and not bool(torch.isfinite(have).all()):
            raise ParserError(f"parser weights {path}: {key} holds NaN or infinite values; the checkpoint is damaged")


def weights_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


class FaceXFormerParser:
    """FaceXFormer's parsing head on the stored crops: all of a clip's frames in one forward pass.

    Crops are resized to the model's 224 px (bicubic, antialiased), normalised with ImageNet's
    statistics as in the public inference code, and the logits resized back to the crop size before
    the argmax. Runs on CUDA when torch sees a GPU, else on the CPU (one thread inside a Dask
    worker, since the cluster runs one worker per core). Landmarks are not used.
    """

    name = "facexformer"
    classes = layout.PARSING_CLASS_SETS["facexformer"]

    def __init__(self, weights: str | Path | None = None, *, model=None, device: str | None = None):
        torch = _torch()
        from .facexformer import IMAGENET_MEAN, IMAGENET_STD, FaceXFormer

        if model is None:
            if weights is None:
                raise ParserError("--parser facexformer needs --parser-weights PATH (the public ckpts/model.pt "
                                  "or a safetensors copy)")
            state = load_weights(weights)
            with torch.device("meta"):
                check_state_dict(state, FaceXFormer(), weights)
            model = FaceXFormer.build(state)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu" and _in_dask_worker():
            torch.set_num_threads(1)
        self.model = model.eval().to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def logits(self, crops: np.ndarray):
        """(T,S,S,3) uint8 RGB -> (T, classes, S, S) float32 logits on the parser's device."""
        import torch
        import torch.nn.functional as F

        from .facexformer import INPUT_SIZE

        size = crops.shape[1]
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        if size != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 1)
        x = (x - self._mean) / self._std
        with torch.inference_mode():
            out = self.model.segment(x)
            if size != INPUT_SIZE:
                out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
        return out

    def parse(self, crops: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        return self.logits(crops).argmax(1).to(dtype=_torch().uint8).cpu().numpy()


PARSERS: dict[str, type] = {"mesh": MeshParser, "facexformer": FaceXFormerParser}
_BUILT: dict[tuple[str, str | None], FaceParser] = {}


def get_parser(name: str, weights: str | Path | None = None) -> FaceParser:
    """The process's parser for (name, weights), built once: a learned parser loads its checkpoint
    once per Dask worker, not once per batch."""
    if name not in PARSERS:
        raise ValueError(f"unknown face parser {name!r}; known: {', '.join(PARSERS)}")
    key = (name, None if weights is None else str(weights))
    if key not in _BUILT:
        _BUILT.clear()  # one parser per process: a learned one holds a few hundred MB
        _BUILT[key] = PARSERS[name]() if name == "mesh" else PARSERS[name](weights)
    return _BUILT[key]


def parser_record(name: str, weights: str | Path | None = None) -> dict:
    """What the store records about the parser: {name, weights_sha256}; checks a learned parser's
    weights (readable safely, names and shapes those of the model) before any worker starts."""
    if name not in PARSERS:
        raise ParserError(f"unknown face parser {name!r}; known: {', '.join(PARSERS)}")
    if name == "mesh":
        if weights is not None:
            raise ParserError("--parser-weights is for --parser facexformer; the mesh parser has no weights")
        return {"name": name, "weights_sha256": None}
    if weights is None:
        raise ParserError("--parser facexformer needs --parser-weights PATH (the public ckpts/model.pt "
                          "or a safetensors copy)")
    torch = _torch()
    from .facexformer import FaceXFormer

    state = load_weights(weights)
    with torch.device("meta"):
        model = FaceXFormer()
    check_state_dict(state, model, weights)
    return {"name": name, "weights_sha256": weights_sha256(weights)}

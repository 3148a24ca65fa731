"""FaceXFormer (Narayan et al., 2024), the face parser the FineCLIPER paper draws its parsing maps with.

Written here from the published architecture so a user's local copy of the public checkpoint loads
into it strictly: every module keeps the public attribute name, so state-dict keys and shapes match
(tests/test_facexformer.py checks all 505 of them against a list made from the public model code).

The model: a torchvision Swin-B trunk; its four stage outputs each projected to 256 channels,
resized to the first stage's grid and fused by a 1x1 convolution; a two-way token/image transformer
("FaceX" decoder) over 18 learned task tokens (7 single-task tokens and 11 class tokens); the class
tokens, through a shared MLP, become per-class filters that are dotted with a 4x upsampled image
embedding to give 11 class logits per pixel. All task tokens take part in the decoder's
self-attention, so they are all kept; the other tasks' prediction heads are kept as parameters (the
checkpoint loads strictly) but never run, since only parsing is needed here.

torch and torchvision are imported by whoever imports this module: the pipeline loads it only for
`--parser facexformer`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fineschema import layout

# Class tokens, in output order: the 11 classes of LaPa, the parsing set FaceXFormer was trained on
# (its public code has 11 mask tokens and an 11-colour map, without names). The contract holds the list.
CLASSES: tuple[str, ...] = layout.PARSING_CLASS_SETS["facexformer"]
INPUT_SIZE = 224  # the resolution the public model was trained and is run at
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGE_CHANNELS = (128, 256, 512, 1024)  # Swin-B stage widths
DIM = 256
# Single-task tokens ahead of the class tokens, with their head's output width (all unused here).
TASK_HEADS = (("landmarks", 136), ("pose", 3), ("attribute", 40), ("visibility", 29), ("age", 8),
              ("gender", 2), ("race", 5))


class MLP(nn.Module):
    """`layers` Linear maps with ReLU between them."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, num_layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (num_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Attention(nn.Module):
    """Multi-head attention whose inner width may be a fraction of the model width."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        if inner % heads:
            raise ValueError(f"{heads} heads do not divide the attention width {inner}")
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(self._split(self.q_proj(q)), self._split(self.k_proj(k)),
                                             self._split(self.v_proj(v)))
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Tokens attend to themselves, then to the image; an MLP on the tokens; the image attends to the tokens."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, tokens, image, token_pe, image_pe):
        if self.skip_first_layer_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(q, k, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        q, k = tokens + token_pe, image + image_pe
        image = self.norm4(image + self.cross_attn_image_to_token(k, q, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = DIM, heads: int = 8, mlp_dim: int = 2048,
                 downsample: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, heads, mlp_dim, downsample, skip_first_layer_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """image (B,C,H,W), image_pe (1,C,H,W), tokens (B,N,C) -> tokens (B,N,C), image (B,HW,C)."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe, queries = tokens, tokens
        for layer in self.layers:
            queries, image = layer(queries, image, token_pe, image_pe)
        attn = self.final_attn_token_to_image(queries + token_pe, image + image_pe, image)
        return self.norm_final_attn(queries + attn), image


class FaceDecoder(nn.Module):
    """Task tokens and the fused image map through the two-way transformer; class masks from the class tokens."""

    def __init__(self, dim: int = DIM, num_classes: int = len(CLASSES)):
        super().__init__()
        self.transformer = TwoWayTransformer(dim=dim)
        for task, _ in TASK_HEADS:
            setattr(self, f"{task}_token", nn.Embedding(1, dim))
        self.mask_tokens = nn.Embedding(num_classes, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetwork_mlps = MLP(dim, dim, dim // 8, 3)
        for task, width in TASK_HEADS:  # loaded with the checkpoint, never run for parsing
            setattr(self, f"{task}_prediction_head", MLP(dim, dim, width, 3))

    def tokens(self) -> torch.Tensor:
        single = [getattr(self, f"{task}_token").weight for task, _ in TASK_HEADS]
        return torch.cat([*single, self.mask_tokens.weight], dim=0)

    def segment(self, image: torch.Tensor, image_pe: torch.Tensor) -> torch.Tensor:
        """image (B,C,H,W) -> class logits (B, classes, 4H, 4W)."""
        b, c, h, w = image.shape
        tokens = self.tokens().unsqueeze(0).expand(b, -1, -1)
        hs, image = self.transformer(image, image_pe, tokens)
        class_tokens = hs[:, len(TASK_HEADS):, :]
        upscaled = self.output_upscaling(image.transpose(1, 2).reshape(b, c, h, w))
        filters = self.output_hypernetwork_mlps(class_tokens)
        b, c, h, w = upscaled.shape
        return (filters @ upscaled.view(b, c, h * w)).view(b, -1, h, w)


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of the grid position under a fixed random (checkpointed) projection."""

    def __init__(self, num_pos_feats: int = DIM // 2):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def forward(self, h: int, w: int) -> torch.Tensor:
        """(C, h, w) encoding of the cell centres of an h x w grid."""
        m = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=m.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=m.device, dtype=torch.float32) + 0.5) / w
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as x, y
        proj = 2 * math.pi * ((2 * coords - 1) @ m.float())
        return torch.cat([proj.sin(), proj.cos()], dim=-1).permute(2, 0, 1)


class FaceXFormerMLP(nn.Module):
    """One stage's features projected to the decoder width."""

    def __init__(self, d_in: int, d_out: int = DIM):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B,d_out,H,W)."""
        b, _, h, w = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)


class FaceXFormer(nn.Module):
    """Swin-B trunk + multi-scale fusion + FaceX decoder; `segment` gives the parsing logits."""

    STAGE_OUTPUTS = (1, 3, 5, 7)  # indices in swin_b().features after which the four stages end

    def __init__(self):
        super().__init__()
        from torchvision.models import swin_b

        swin = swin_b(weights=None)
        # The public model keeps Swin's features, norm, permute, avgpool and flatten (all but the
        # classifier) under `backbone`; only the features' stage outputs feed the decoder.
        self.backbone = nn.Sequential(*list(swin.children())[:-1])
        self.pe_layer = PositionEmbeddingRandom(DIM // 2)
        self.face_decoder = FaceDecoder(DIM, len(CLASSES))
        self.linear_c = nn.ModuleList(FaceXFormerMLP(c, DIM) for c in STAGE_CHANNELS)
        self.linear_fuse = nn.Conv2d(DIM * len(STAGE_CHANNELS), DIM, kernel_size=1, bias=False)

    @classmethod
    def build(cls, state: dict | None = None, seed: int = 0) -> FaceXFormer:
        """The model without torchvision's weight init (half a minute for Swin-B on a busy CPU).

        With a checkpoint `state`, its tensors are taken over as they are (names and shapes strictly
        those of the model, as float32); without one, seeded random weights for tests and benchmarks.
        """
        with torch.device("meta"):
            model = cls()
        if state is not None:
            model.load_state_dict(state, strict=True, assign=True)
            return model.float()
        model = model.to_empty(device="cpu")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("face_decoder.") and "token" in name:  # nn.Embedding's own N(0, 1)
                    p.normal_(0.0, 1.0, generator=gen)
                elif p.dim() > 1:  # unit-variance outputs layer after layer
                    p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
                else:  # norm scales around 1, biases around 0
                    p.normal_(1.0 if name.endswith("weight") else 0.0, 0.02, generator=gen)
            for module in model.modules():
                if hasattr(module, "define_relative_position_index"):
                    module.define_relative_position_index()
            model.pe_layer.positional_encoding_gaussian_matrix.normal_(generator=gen)
        return model

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised images (B,3,224,224) -> the four stage outputs, NCHW, finest first."""
        out = []
        for i, layer in enumerate(self.backbone[0]):
            x = layer(x)
            if i in self.STAGE_OUTPUTS:
                out.append(x.permute(0, 3, 1, 2))
            if i == self.STAGE_OUTPUTS[-1]:
                break
        return out

    def fuse(self, stages: list[torch.Tensor]) -> torch.Tensor:
        size = stages[0].shape[2:]
        maps = [F.interpolate(mlp(s), size=size, mode="bilinear", align_corners=False)
                for s, mlp in zip(stages, self.linear_c, strict=True)]
        return self.linear_fuse(torch.cat(maps[::-1], dim=1))  # coarsest stage first, as trained

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,224,224) -> parsing logits (B,11,224,224)."""
        fused = self.fuse(self.stage_features(x))
        pe = self.pe_layer(fused.shape[2], fused.shape[3]).unsqueeze(0).to(fused.dtype)
        return self.face_decoder.segment(fused, pe)

    forward = segment

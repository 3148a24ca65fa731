"""AIM-style adapters injected into open_clip's transformer blocks, one adapter set per stream.

Each `ResidualAttentionBlock` is replaced by an `AdaptedBlock` that keeps the frozen block and adds,
for every named adapter set,

    x = x + attn(ln_1(x)) -> x = x + A_attn(attn(ln_1(x)))            (adapter after attention, with skip)
    x = x + mlp(ln_2(x))  -> x = x + mlp(ln_2(x)) + s * A_mlp(ln_2(x)) (adapter parallel to the MLP, no skip)

with A(h) = up(GELU(down(h))) (+ h for the skip form) and s = 0.5. `up` starts at zero, so an untrained
adapter leaves the block's output unchanged and the adapted model starts as plain CLIP. Several sets
(frames / parsing / landmarks on the image tower; positive / negative / description on the text
tower) share the one frozen backbone, each with its own bottleneck width; `AdapterSwitch.use(name)`
picks the set a forward pass uses.

Gradient checkpointing. A block reads the active set once, when it runs forward, and passes the name
into the checkpointed function as an argument; the recomputation in the backward pass therefore uses
the same set even though the switch has long been reset (open_clip's own `grad_checkpointing` would
call the block again and read the switch at backward time, so it must stay off).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Adapter(nn.Module):
    """down -> GELU -> up, optionally plus the input; `up` is zero-initialised."""

    def __init__(self, width: int, hidden: int, skip: bool):
        super().__init__()
        self.skip = skip
        self.down = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(x)))
        return x + out if self.skip else out


class AdapterPair(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.attn = Adapter(width, hidden, skip=True)
        self.mlp = Adapter(width, hidden, skip=False)


class AdapterSwitch:
    """Which adapter set the adapted blocks of one tower use (None: plain CLIP), and whether they
    checkpoint. Not a module: no state in the state dict."""

    def __init__(self):
        self.active: str | None = None
        self.checkpointing = False

    @contextmanager
    def use(self, name: str | None):
        previous, self.active = self.active, name
        try:
            yield
        finally:
            self.active = previous


def pair_parameters(width: int, hidden: int) -> int:
    """Parameters of one AdapterPair (two adapters, weights and biases)."""
    return 2 * (2 * width * hidden + width + hidden)


def hidden_width(width: int, ratio: float) -> int:
    return max(1, round(width * ratio))


class AdaptedBlock(nn.Module):
    """A frozen open_clip ResidualAttentionBlock plus named adapter pairs (see module docstring)."""

    def __init__(self, block: nn.Module, ratios: dict[str, float], scale: float, switch: AdapterSwitch):
        super().__init__()
        self.block = block
        width = block.ln_1.normalized_shape[0]
        self.adapters = nn.ModuleDict({n: AdapterPair(width, hidden_width(width, r)) for n, r in ratios.items()})
        self.scale = scale
        self._switch = switch

    def get_weight_dtype(self) -> torch.dtype:
        return self.block.get_weight_dtype()

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        name = self._switch.active  # bound here, at forward time, for any recomputation below
        if name is None:
            return self.block(q_x, k_x=k_x, v_x=v_x, attn_mask=attn_mask)
        if self._switch.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._adapted, q_x, name, attn_mask, use_reentrant=False)
        return self._adapted(q_x, name, attn_mask)

    def _adapted(self, q_x: torch.Tensor, name: str, attn_mask=None) -> torch.Tensor:
        b = self.block
        pair = self.adapters[name]
        attn = b.attention(q_x=b.ln_1(q_x), attn_mask=attn_mask)
        x = q_x + b.ls_1(pair.attn(attn))
        h = b.ln_2(x)
        return x + b.ls_2(b.mlp(h)) + self.scale * pair.mlp(h)


def inject(transformer: nn.Module, ratios: dict[str, float], scale: float) -> AdapterSwitch:
    """Wrap every block of an open_clip `Transformer` (its `.resblocks`) in place; return the switch.

    `ratios` maps each adapter set to its bottleneck width as a fraction of the block width."""
    from open_clip.transformer import ResidualAttentionBlock

    switch = AdapterSwitch()
    blocks = transformer.resblocks
    for i, block in enumerate(blocks):
        if not isinstance(block, ResidualAttentionBlock):
            raise TypeError(
                f"block {i} is {type(block).__name__}; adapters support open_clip's ResidualAttentionBlock "
                "(standard ViT / text transformers)"
            )
        blocks[i] = AdaptedBlock(block, ratios, scale, switch)
    transformer.grad_checkpointing = False  # see the module docstring: we checkpoint inside the block
    return switch

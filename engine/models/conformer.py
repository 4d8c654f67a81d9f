"""A Conformer encoder whose every block has its own sizes (Gulati et al., Interspeech 2020).

Written for compression rather than wrapped from torchaudio:

- each block takes its own number of heads, head dimension, two macaron FFN widths, convolution
  channels and kernel size; a size of 0 makes that module absent, so a structurally pruned model
  is a real, smaller dense model that reloads from its config (``EncoderConfig``);
- ``forward(..., return_blocks=True)`` also returns every block's output (layerwise distillation);
- streaming: a chunked attention mask (``chunk_size`` frames, ``left_chunks`` chunks of left
  context) and causal depthwise convolution; ``StreamingState`` and ``forward_chunk`` run the
  same computation chunk by chunk with caches, and give the same output as the masked pass;
- positions are rotary (RoPE, Su et al. 2021): relative in effect, and a cached key keeps its
  rotation, which keeps the streaming caches simple.

Shapes: features (B, T, F) with lengths (B,); after the 4x subsampling (B, T4, d_model); after an
optional time-reduction layer (``reduce_after``: frame pairs merged after that block) (B, T8, d).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class BlockConfig:
    """Sizes of one Conformer block. 0 makes a module absent."""

    heads: int = 4
    head_dim: int = 36
    ffn1: int = 576  # first (macaron) feed-forward hidden units
    ffn2: int = 576  # second feed-forward hidden units
    conv_channels: int = 144
    kernel: int = 15


@dataclass(frozen=True)
class EncoderConfig:
    input_dim: int = 80
    d_model: int = 144
    blocks: tuple[BlockConfig, ...] = field(default_factory=lambda: (BlockConfig(),) * 6)
    subsampling_channels: int = 64
    reduce_after: int | None = None  # merge frame pairs after this block (0-based): 8x overall
    causal: bool = False  # causal depthwise conv
    chunk_size: int = 0  # attention chunk in frames at the 4x rate; 0 = full context
    left_chunks: int = -1  # chunks of left context; -1 = all
    dropout: float = 0.1
    # cross-layer sharing (engine/compress/share.py): virtual layer i runs physical block
    # share[i]; None = one block per layer. Each virtual layer keeps its own output LayerNorm.
    share: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        assert self.chunk_size >= 0, self.chunk_size
        if self.share is not None:
            object.__setattr__(self, "share", tuple(int(i) for i in self.share))
            bad = [i for i in self.share if not 0 <= i < len(self.blocks)]
            assert not bad, f"share names blocks {bad}; there are {len(self.blocks)} physical blocks"
            assert set(self.share) == set(range(len(self.blocks))), \
                f"every physical block must run in some layer: share={self.share}"
        if self.chunk_size and self.reduce_after is not None:
            assert self.chunk_size % 2 == 0, f"chunk_size must be even with reduction: {self.chunk_size}"
        for i, b in enumerate(self.blocks):
            assert b.heads == 0 or b.head_dim % 2 == 0, f"block {i}: RoPE needs an even head_dim"
            assert b.conv_channels == 0 or b.kernel % 2 == 1, f"block {i}: odd kernel, got {b.kernel}"
        if self.reduce_after is not None:
            assert 0 <= self.reduce_after < self.n_layers - 1, self.reduce_after

    @property
    def streaming(self) -> bool:
        return self.chunk_size > 0

    @property
    def layer_map(self) -> tuple[int, ...]:
        """The physical block each (virtual) layer runs, in order."""
        return self.share if self.share is not None else tuple(range(len(self.blocks)))

    @property
    def n_layers(self) -> int:
        """Layers the input passes through (more than the blocks when blocks are shared)."""
        return len(self.layer_map)

    def with_blocks(self, blocks: list[BlockConfig]) -> "EncoderConfig":
        return replace(self, blocks=tuple(blocks))


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) -> (B, T) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def chunk_attention_mask(t: int, chunk: int, left_chunks: int, device=None, offset: int = 0,
                         kv_len: int | None = None) -> Tensor:
    """(t, kv_len) bool: query frame i (absolute offset+i) may see key j (absolute kv_start+j).

    Keys are the last ``kv_len`` absolute frames ending at offset+t. Frames see their whole chunk
    and ``left_chunks`` chunks before it (all before it when -1).
    """
    kv_len = t if kv_len is None else kv_len
    q = torch.arange(offset, offset + t, device=device)[:, None]
    k = torch.arange(offset + t - kv_len, offset + t, device=device)[None, :]
    qc, kc = q // chunk, k // chunk
    ok = kc <= qc
    if left_chunks >= 0:
        ok &= kc >= qc - left_chunks
    return ok


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim, 2).float() / dim),
                             persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """x: (B, H, T, D), positions: (T,) absolute frame indices."""
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (T, D/2)
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class _MaskedScale(torch.autograd.Function):
    """x * mask * scale, keeping only the boolean mask for the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x * mask * scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask * ctx.scale, None, None


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU.

    On the CPU, ``F.dropout`` draws one Bernoulli sample per element, which took 14% of the
    teacher's training step (BENCHMARKS.md, "Devices and precision"). Here the mask comes
    from 16 random bits per element, drawn four at a time from 64-bit integers (``p`` rounded to
    1/65,536), and only the boolean mask is kept for backward (F.dropout keeps a float mask): 43%
    less time for forward + backward on a (8, 125, 768) tensor at two threads. The generator is
    torch's global one, so a checkpoint's RNG state still resumes it exactly. Elsewhere (CUDA has
    a fused kernel) and in eval mode it is ``nn.Dropout``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        dropped = round(self.p * 65536)  # of 65,536 values of a 16-bit draw
        if dropped >= 65536:
            return x * 0.0
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, 2 ** 63 - 1)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= dropped - 32768
        return _MaskedScale.apply(x, keep, 65536 / (65536 - dropped))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        self.dropout = Dropout(dropout)

    @property
    def hidden(self) -> int:
        return self.up.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(self.dropout(F.silu(self.up(self.norm(x))))))

    def prune(self, keep: Tensor) -> None:
        """Keep hidden units ``keep`` (indices): rows of ``up``, columns of ``down``."""
        self.up = _slice_linear(self.up, rows=keep)
        self.down = _slice_linear(self.down, cols=keep)


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions; q, k, v kept separate so heads prune."""

    def __init__(self, d_model: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, heads * head_dim)
        self.k = nn.Linear(d_model, heads * head_dim)
        self.v = nn.Linear(d_model, heads * head_dim)
        self.out = nn.Linear(heads * head_dim, d_model)
        self.rope = RotaryEmbedding(head_dim)
        self.dropout = Dropout(dropout)
        self.attn_dropout = dropout

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, positions: Tensor,
                cache: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, T, d); mask: (B or 1, T, T_kv) bool; positions: (T,).

        ``cache``: (k, v) of earlier frames, (B, H, T_cache, D), already rotated. Returns the
        output and the (k, v) of cache + this call's frames.
        """
        h = self.norm(x)
        q = self.rope(self._split(self.q(h)), positions)
        k = self.rope(self._split(self.k(h)), positions)
        v = self._split(self.v(h))
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None], dropout_p=self.attn_dropout if self.training else 0.0)
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.dropout(self.out(out)), (k, v)

    def prune(self, keep_heads: Tensor) -> None:
        idx = (keep_heads[:, None] * self.head_dim
               + torch.arange(self.head_dim, device=keep_heads.device)).flatten()
        self.q, self.k, self.v = (_slice_linear(m, rows=idx) for m in (self.q, self.k, self.v))
        self.out = _slice_linear(self.out, cols=idx)
        self.heads = len(keep_heads)


class ConvModule(nn.Module):
    """Pointwise (2C) -> GLU -> depthwise (k) -> LayerNorm -> SiLU -> pointwise back to d_model.

    LayerNorm instead of the paper's BatchNorm: batch statistics break with padding and streaming.
    """

    def __init__(self, d_model: int, channels: int, kernel: int, causal: bool,
                 dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * channels)
        self.dw = nn.Conv1d(channels, channels, kernel, groups=channels)  # padded in forward
        self.dw_norm = nn.LayerNorm(channels)
        self.pw2 = nn.Linear(channels, d_model)
        self.causal, self.kernel = causal, kernel
        self.dropout = Dropout(dropout)

    @property
    def channels(self) -> int:
        return self.dw.in_channels

    def forward(self, x: Tensor, valid: Tensor, cache: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """x: (B, T, d), valid: (B, T) bool; cache: (B, C, k-1) last inputs (causal only)."""
        h = F.glu(self.pw1(self.norm(x)), dim=-1)
        h = (h * valid[..., None]).transpose(1, 2)  # padding must not leak into the convolution
        if self.causal:
            left = cache if cache is not None else h.new_zeros(h.shape[0], h.shape[1], self.kernel - 1)
            h = torch.cat([left, h], 2)
            new_cache = h[:, :, -(self.kernel - 1):] if self.kernel > 1 else h[:, :, :0]
        else:
            pad = (self.kernel - 1) // 2
            h = F.pad(h, (pad, pad))
            new_cache = h[:, :, :0]
        h = self.dw(h).transpose(1, 2)
        return self.dropout(self.pw2(F.silu(self.dw_norm(h)))), new_cache

    def prune(self, keep: Tensor) -> None:
        """Keep channels ``keep``: both GLU halves of pw1, depthwise filters, norm, pw2 columns."""
        c = self.channels
        self.pw1 = _slice_linear(self.pw1, rows=torch.cat([keep, keep + c]))
        dw = nn.Conv1d(len(keep), len(keep), self.kernel, groups=len(keep))
        dw.weight.data = self.dw.weight.data[keep].clone()
        dw.bias.data = self.dw.bias.data[keep].clone()
        self.dw = dw
        norm = nn.LayerNorm(len(keep))
        norm.weight.data = self.dw_norm.weight.data[keep].clone()
        norm.bias.data = self.dw_norm.bias.data[keep].clone()
        self.dw_norm = norm
        self.pw2 = _slice_linear(self.pw2, cols=keep)


class ConformerBlock(nn.Module):
    """x + 1/2 FFN -> x + MHSA -> x + Conv -> x + 1/2 FFN -> LayerNorm; absent modules skipped."""

    def __init__(self, d_model: int, cfg: BlockConfig, causal: bool, dropout: float) -> None:
        super().__init__()
        self.ffn1 = FeedForward(d_model, cfg.ffn1, dropout) if cfg.ffn1 else None
        self.attn = SelfAttention(d_model, cfg.heads, cfg.head_dim, dropout) if cfg.heads else None
        self.conv = (ConvModule(d_model, cfg.conv_channels, cfg.kernel, causal, dropout)
                     if cfg.conv_channels else None)
        self.ffn2 = FeedForward(d_model, cfg.ffn2, dropout) if cfg.ffn2 else None
        self.norm = nn.LayerNorm(d_model)
        self.kernel = cfg.kernel

    def config(self) -> BlockConfig:
        return BlockConfig(
            heads=self.attn.heads if self.attn else 0,
            head_dim=self.attn.head_dim if self.attn else 0,
            ffn1=self.ffn1.hidden if self.ffn1 else 0, ffn2=self.ffn2.hidden if self.ffn2 else 0,
            conv_channels=self.conv.channels if self.conv else 0, kernel=self.kernel)

    def forward(self, x: Tensor, valid: Tensor, attn_mask: Tensor, positions: Tensor,
                cache: dict | None = None) -> tuple[Tensor, dict]:
        new_cache: dict = {}
        if self.ffn1 is not None:
            x = x + 0.5 * self.ffn1(x)
        if self.attn is not None:
            a, new_cache["kv"] = self.attn(x, attn_mask, positions, cache.get("kv") if cache else None)
            x = x + a
        if self.conv is not None:
            c, new_cache["conv"] = self.conv(x, valid, cache.get("conv") if cache else None)
            x = x + c
        if self.ffn2 is not None:
            x = x + 0.5 * self.ffn2(x)
        return self.norm(x), new_cache


class Conv2dSubsampling(nn.Module):
    """Two 3x3 stride-2 convolutions: (B, T, F) -> (B, (T-1)//2 ... , d), T4 = ((T-1)//2-1)//2.

    Output frame j sees input frames 4j .. 4j+6 (a 3-frame, 30 ms look-ahead).
    """

    def __init__(self, input_dim: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, 2), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, 2), nn.SiLU())
        f = ((input_dim - 1) // 2 - 1) // 2
        self.proj = nn.Linear(channels * f, d_model)

    @staticmethod
    def out_lengths(lengths: Tensor) -> Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x[:, None])  # (B, C, T4, F4)
        b, c, t, f = h.shape
        return self.proj(h.permute(0, 2, 1, 3).reshape(b, t, c * f))


class TimeReduction(nn.Module):
    """Merge frame pairs: (B, T, d) -> (B, ceil(T/2), d) by concatenation and a linear map."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * d_model, d_model)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # pad one frame always and keep ceil(T/2) pairs: no branch on the length, so an ONNX
        # trace stays right for odd and even lengths alike
        b, t, d = x.shape
        half = (t + 1) // 2
        # padded frames hold whatever the blocks computed there: zero them, or an odd-length
        # utterance's last pair takes one in, and attention spreads it (batch-dependent output)
        x = x * lengths_to_mask(lengths, t)[..., None].to(x.dtype)
        x = F.pad(x, (0, 0, 0, 1))[:, : 2 * half]
        return self.proj(x.reshape(b, half, 2 * d)), (lengths + 1) // 2


@dataclass
class StreamingState:
    """Caches of a chunk-by-chunk encoder pass (one utterance batch)."""

    feats: Tensor | None = None  # input frames not yet consumed by the subsampling
    offset4: int = 0  # absolute frames emitted at the 4x rate
    offset_r: int = 0  # absolute frames emitted after reduction
    blocks: list = field(default_factory=list)


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, cmvn: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.cmvn = cmvn if cmvn is not None else nn.Identity()
        self.subsampling = Conv2dSubsampling(cfg.input_dim, cfg.subsampling_channels, cfg.d_model)
        self.dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg.d_model, b, cfg.causal, cfg.dropout)
                                    for b in cfg.blocks)
        # shared blocks: the output LayerNorm is the small unshared part, one per layer
        self.layer_norms = None
        if cfg.share is not None:
            for blk in self.blocks:
                blk.norm = nn.Identity()
            self.layer_norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in cfg.share)
        self.reduction = TimeReduction(cfg.d_model) if cfg.reduce_after is not None else None

    def config(self) -> EncoderConfig:
        """The current config (after any pruning): rebuilding from it gives this architecture."""
        return self.cfg.with_blocks([b.config() for b in self.blocks])

    def _mask(self, lengths: Tensor, t: int, reduced: bool) -> Tensor:
        valid = lengths_to_mask(lengths, t)
        mask = valid[:, None, :].expand(-1, t, -1)
        if self.cfg.chunk_size:
            chunk = self.cfg.chunk_size // 2 if reduced else self.cfg.chunk_size
            mask = mask & chunk_attention_mask(t, chunk, self.cfg.left_chunks, lengths.device)[None]
        # a query row with no visible key (padding) would give NaN; let padding see itself
        # (arange == arange, not torch.eye: ONNX's EyeLike has no bool kernel in onnxruntime)
        idx = torch.arange(t, device=lengths.device)
        return mask | (idx[:, None] == idx[None, :])[None]

    def forward(self, x: Tensor, lengths: Tensor, return_blocks: bool = False
                ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """x: (B, T, F) raw fbank, lengths: (B,) -> (B, T', d), (B,) [, per-block outputs]."""
        assert x.ndim == 3 and x.shape[2] == self.cfg.input_dim, x.shape
        h = self.dropout(self.subsampling(self.cmvn(x)))
        lengths = Conv2dSubsampling.out_lengths(lengths).clamp(min=1)
        if not lengths.is_cuda:  # on a GPU this check would make the host wait every step
            assert h.shape[1] >= int(lengths.max()), (h.shape, lengths.max())
        mask, valid = self._mask(lengths, h.shape[1], False), lengths_to_mask(lengths, h.shape[1])
        positions = torch.arange(h.shape[1], device=h.device)
        outs = []
        for i, p in enumerate(self.cfg.layer_map):
            h, _ = self.blocks[p](h, valid, mask, positions)
            if self.layer_norms is not None:
                h = self.layer_norms[i](h)
            outs.append(h)
            if self.reduction is not None and i == self.cfg.reduce_after:
                h, lengths = self.reduction(h, lengths)
                mask, valid = self._mask(lengths, h.shape[1], True), lengths_to_mask(lengths, h.shape[1])
                positions = torch.arange(h.shape[1], device=h.device)
        h = h * valid[..., None]
        return (h, lengths, outs) if return_blocks else (h, lengths)

    # ----- streaming ---------------------------------------------------------------------------
    def forward_chunk(self, x: Tensor, state: StreamingState | None, final: bool = False
                      ) -> tuple[Tensor, StreamingState]:
        """Encode the next feature frames of a batch of equal-length streams, chunk by chunk.

        Feed any number of new fbank frames (B, N, F); returns the encoder frames that became
        computable. Equal to ``forward`` with the streaming mask on the same audio (tested), as
        long as ``chunk_size`` is set: frames are emitted a whole chunk at a time, and the rest
        with ``final=True``.
        """
        cfg = self.cfg
        assert cfg.chunk_size > 0 and cfg.causal, "forward_chunk needs a causal, chunked encoder"
        state = state or StreamingState(blocks=[{} for _ in range(cfg.n_layers)])
        feats = x if state.feats is None else torch.cat([state.feats, x], 1)
        # 4x frames computable from the buffered input: j needs inputs up to 4j+6
        avail = (feats.shape[1] - 3) // 4 if feats.shape[1] >= 7 else 0
        if not final:
            avail = avail // cfg.chunk_size * cfg.chunk_size
        if avail <= 0:
            state.feats = feats
            return x.new_zeros(x.shape[0], 0, cfg.d_model), state
        h = self.subsampling(self.cmvn(feats[:, : 4 * avail + 3]))[:, :avail]
        state.feats = feats[:, 4 * avail:]
        b = h.shape[0]
        lengths = torch.full((b,), h.shape[1], dtype=torch.long, device=h.device)
        offset, chunk, reduced = state.offset4, cfg.chunk_size, False
        for i, p in enumerate(cfg.layer_map):  # caches are per layer, weights per block
            h = self._block_chunk(self.blocks[p], h, offset, chunk, state.blocks[i])
            if self.layer_norms is not None:
                h = self.layer_norms[i](h)
            if self.reduction is not None and i == cfg.reduce_after:
                h, lengths = self.reduction(h, lengths)
                offset, chunk, reduced = state.offset_r, chunk // 2, True
        state.offset4 += avail
        if reduced:
            state.offset_r += h.shape[1]
        return h, state

    def _block_chunk(self, block: ConformerBlock, h: Tensor, offset: int, chunk: int,
                     cache: dict) -> Tensor:
        t = h.shape[1]
        kv = cache.get("kv")
        cached = kv[0].shape[2] if kv is not None else 0
        mask = chunk_attention_mask(t, chunk, self.cfg.left_chunks, h.device, offset, cached + t)
        positions = torch.arange(offset, offset + t, device=h.device)
        valid = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        h, new = block(h, valid, mask[None], positions, cache)
        if "kv" in new and self.cfg.left_chunks >= 0:
            keep = self.cfg.left_chunks * chunk + (offset + t) % chunk
            new["kv"] = tuple(z[:, :, max(0, z.shape[2] - keep):] for z in new["kv"])
        cache.update(new)
        return h


def _slice_linear(m: nn.Linear, rows: Tensor | None = None, cols: Tensor | None = None) -> nn.Linear:
    """A new, smaller Linear holding the chosen output rows / input columns of ``m``."""
    w = m.weight.data
    b = m.bias.data if m.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    out.weight.data = w.clone()
    if b is not None:
        out.bias.data = b.clone()
    return out

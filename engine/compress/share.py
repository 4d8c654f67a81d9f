"""Cross-layer weight sharing (Gao et al., "Extremely low footprint end-to-end ASR system for
smart device", Interspeech 2021; after ALBERT): L layers run M < L physical Conformer blocks.

- Patterns: ``repeat`` runs each block k = L / M times in a row (0,0,1,1,2,2), ``cycle`` runs the
  stack of blocks k times (0,1,2,0,1,2). L need not be a multiple of M: ``repeat`` spreads the
  remainder evenly, ``cycle`` stops where the layers end.
- The small unshared part: every layer keeps its own output LayerNorm (``EncoderConfig.share``,
  ``ConformerEncoder.layer_norms``), 2 x d_model parameters a layer.
- Compute follows the layers, size follows the blocks: MACs and RTF are measured on the real
  forward pass (L layers), and a block's tensors exist once in the module tree, in the state
  dict and in every exported file, so ``params`` and ``bytes`` count each shared tensor once.
  ``unique_params`` checks that from the tensors' storage, so a sharing written some other way
  (one module referenced twice) would count once too.

A shared model is built from its config (``[stages.model] share``, ``physical_blocks``) and is
trained from scratch or distilled like any other; it prunes (magnitude or L0: the masks and gates
sit on the physical blocks, so a pruned unit is gone from every layer that runs it) and exports.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from engine.models.conformer import EncoderConfig

PATTERNS = ("repeat", "cycle")


def layer_map(pattern: str, layers: int, blocks: int) -> tuple[int, ...]:
    """The physical block each of ``layers`` layers runs, for ``blocks`` blocks."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown sharing pattern {pattern!r}; expected one of {PATTERNS}")
    if not 1 <= blocks <= layers:
        raise ValueError(f"sharing needs 1 <= physical blocks <= layers, got {blocks} blocks "
                         f"for {layers} layers")
    if pattern == "repeat":
        return tuple(i * blocks // layers for i in range(layers))
    return tuple(i % blocks for i in range(layers))


def shared_encoder(enc: EncoderConfig, pattern: str, blocks: int) -> EncoderConfig:
    """``enc`` (whose ``blocks`` are the layers wanted) with its layers running ``blocks``
    physical blocks. Block i takes the sizes of the first layer that runs it."""
    layers = enc.n_layers
    mapping = layer_map(pattern, layers, blocks)
    first = {p: i for i, p in reversed(list(enumerate(mapping)))}
    return replace(enc, blocks=tuple(enc.blocks[first[p]] for p in range(blocks)), share=mapping)


def unique_params(model: nn.Module) -> int:
    """Parameters counted once per storage: what the weights really cost."""
    seen, total = set(), 0
    for _, p in model.named_parameters(remove_duplicate=False):
        key = (p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape))
        if key not in seen:
            seen.add(key)
            total += p.numel()
    return total


def describe_sharing(model) -> dict:
    """Layers, blocks, the map, and the parameters sharing saves: the blocks one block per layer
    would need, minus the blocks there are (one output LayerNorm per layer either way)."""
    enc = model.encoder
    per_block = [sum(p.numel() for p in blk.parameters()) for blk in enc.blocks]
    mapping = enc.cfg.layer_map
    unshared = sum(per_block[p] for p in mapping)
    norms = sum(p.numel() for p in enc.layer_norms.parameters()) if enc.layer_norms else 0
    return {"layers": len(mapping), "blocks": len(enc.blocks), "layer_map": list(mapping),
            "block_params": sum(per_block), "layer_norm_params": norms,
            "params_saved": unshared - sum(per_block)}  # the layer norms exist either way

"""Experiment TOML -> validated, frozen pydantic models; parsed once, at the edge.

An experiment names its data and an ordered list of ``[[stages]]``. Every stage has a ``kind`` and
a unique ``name``; stages that work on a model name the earlier stage it comes from (``model``).
Unknown keys, unknown stage kinds and dangling stage references are rejected with the key path
and the allowed values, e.g. ``experiments/x.toml: stages[1].kind: unknown stage kind 'prun';
allowed: distill, evaluate, export, finetune, las_distill, las_train, prune_l0, prune_magnitude,
train``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # engine.devices resolves and checks it


# part of a sherpa-onnx export stage's identity (engine/runner/graph.py): bumped when the exported
# graph changes, so a run submitted with --reuse exports again rather than take an older artifact
# (2: every encoder frame repeated, engine/export.py FRAME_REPEAT; 3: the sensitivity sweep keeps
# a module type fp32 only on a significant loss)
SHERPA_FORMAT_VERSION = 3

# the module types an int8 export can keep fp32 (engine/compress/quantize.py maps exported node
# names onto them); here, below the quantizer, so the export stage's keep_fp32 is checked at parsing
MODULE_TYPES = ("subsampling", "feed_forward", "attention", "convolution", "time_reduction",
                "encoder_proj", "decoder", "joiner")


class ConfigError(ValueError):
    """An experiment that cannot run; the message names the file, the key path and the value."""


def _number_kind(annotation) -> str | None:
    """'an integer' / 'a number' when a field holds only ints / ints and floats (maybe None)."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation) if origin in (Union, types.UnionType) else (annotation,)
    args = [a for a in args if a is not type(None)]
    if not args or not all(a in (int, float) for a in args):
        return None
    return "an integer" if all(a is int for a in args) else "a number"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_coercion(cls, data):
        """A number must be written as one: ``max_steps = true`` is not 1 step and
        ``peak_lr = "3e-3"`` is a string (TOML has numbers), as everywhere else in the file."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                want = _number_kind(field.annotation)
                if want and isinstance(value, (bool, str)):
                    what = "a boolean" if isinstance(value, bool) else "a string"
                    raise ValueError(f"{name} = {value!r}: expected {want}, not {what}")
        return data


BUILTIN_TIERS = ("tiny", "demo", "full")  # engine.data.synth.SIZES (a test keeps them equal)


class DataConfig(_Strict):
    corpus: str = Field("builtin:tiny", description="a corpus folder, or builtin:tiny|demo|full")
    vocab_size: int = Field(256, ge=8, le=8192)
    tokenizer: Literal["unigram", "bpe"] = "unigram"
    train_split: str = "train"
    dev_split: str = "dev"

    @model_validator(mode="after")
    def _builtin(self):
        if self.corpus.startswith("builtin:") and self.corpus[8:] not in BUILTIN_TIERS:
            raise ValueError(f"corpus = {self.corpus!r}: no such built-in corpus; expected "
                             + ", ".join(f"builtin:{t}" for t in BUILTIN_TIERS))
        return self


class ModelConfig(_Strict):
    preset: Literal["teacher", "student-m", "student-s", "tiny"] = "tiny"
    predictor: Literal["stateless", "lstm"] = "stateless"
    streaming: bool = False
    chunk_size: int | None = Field(None, ge=2, description="frames at the 4x rate (40 ms each)")
    left_chunks: int | None = Field(None, ge=-1)
    ctc_weight: float | None = Field(None, ge=0.0, lt=1.0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    time_reduction: bool = Field(True, description="merge frame pairs after block 2: 12.5 Hz "
                                                   "into the joiner instead of 25 Hz")
    ctc_layer: Literal["reduce", "top"] = Field(
        "reduce", description="where the auxiliary CTC head reads: reduce: the block before "
                              "the time reduction (25 Hz); top: the encoder output")
    blocks: int | None = Field(None, ge=3, description="encoder depth instead of the preset's "
                                                       "(each block as the preset's)")
    loss: Literal["pruned", "full", "torchaudio"] = Field(
        "pruned", description="pruned: k2-style pruned RNN-T; full: the pure-PyTorch loss over "
                              "the whole lattice; torchaudio: torchaudio's rnnt_loss")
    prune_range: int = Field(5, ge=2, description="band of u per frame for the pruned loss")
    simple_loss_scale: float = Field(0.5, ge=0.0, le=1.0,
                                     description="weight of the simple joiner's loss after warm-up")
    share: Literal["none", "repeat", "cycle"] = Field(
        "none", description="cross-layer weight sharing: the encoder's layers (blocks) run "
                            "physical_blocks blocks, each repeated in a row or the stack cycled")
    physical_blocks: int | None = Field(None, ge=1, description="blocks the shared layers run")

    @model_validator(mode="after")
    def _sharing(self):
        if self.share != "none" and self.physical_blocks is None:
            raise ValueError(f"share = {self.share!r} needs physical_blocks (how many blocks "
                             f"the layers run)")
        if self.share == "none" and self.physical_blocks is not None:
            raise ValueError("physical_blocks is set but share is 'none'; set share = "
                             "'repeat' or 'cycle'")
        if self.blocks is not None and self.physical_blocks is not None \
                and self.physical_blocks > self.blocks:
            raise ValueError(f"physical_blocks = {self.physical_blocks} exceeds the "
                             f"{self.blocks} layers (blocks)")
        return self


class TrainConfig(_Strict):
    max_steps: int = Field(1000, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="wall-clock budget for training")
    max_duration: float = Field(45.0, gt=0, description="seconds of audio per batch")
    peak_lr: float = Field(2.5e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    lr_schedule: Literal["cosine", "inv_sqrt"] = Field(
        "cosine", description="after warm-up: cosine: decay to final_lr_ratio x peak at "
                              "max_steps (tied to the budget); inv_sqrt: 1/sqrt(step), never "
                              "annealed (for runs with no step budget)")
    final_lr_ratio: float = Field(0.02, ge=0.0, le=1.0,
                                  description="learning rate at max_steps, relative to the peak")
    loss_warmup_steps: int = Field(
        300, ge=0, description="steps over which the pruned loss ramps in (icefall's recipe)")
    weight_decay: float = Field(1e-3, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    spec_augment: bool = Field(
        False, description="SpecAugment on 90% of utterances; off by default: small models on "
                           "small data underfit with it (recipe study, BENCHMARKS.md)")
    spec_augment_from: int = Field(
        0, ge=0, description="first update with SpecAugment (0: from the start); later lets a "
                             "small model fit the data before it is regularised")
    noise_p: float = Field(0.0, ge=0.0, le=1.0, description="share of utterances with added noise")
    speed_perturb: float = Field(
        0.0, ge=0.0, le=1.0, description="share of utterances speed-perturbed on their features "
                                         "(tempo, pitch and formants move together)")
    speed_factors: tuple[float, float] = Field(
        (0.9, 1.1), description="speed factors drawn uniformly from [low, high]")
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    average_last: int = Field(1, ge=1, description="average the last N checkpoints at the end")
    threads: int | None = Field(None, ge=1)
    device: str = Field("auto", pattern=DEVICE_PATTERN,
                        description="auto (CUDA when present), cpu, cuda or cuda:N; a DDP rank "
                                    "on CUDA takes the GPU of its local rank")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: autocast (matmuls, convolutions in bfloat16; the transducer "
                            "loss and KD in fp32)")
    eval_every: int = Field(0, ge=0, description="evaluate every N steps while training (0: off)")
    eval_utterances: int = Field(100, ge=1, description="utterances per periodic evaluation")
    eval_splits: list[str] | None = Field(None, description="splits of the periodic evaluation; "
                                                            "default the dev split")

    @model_validator(mode="after")
    def _speed(self):
        lo, hi = self.speed_factors
        if not 0.5 <= lo <= hi <= 2.0:
            raise ValueError(f"speed_factors {list(self.speed_factors)} must satisfy "
                             f"0.5 <= low <= high <= 2.0")
        return self


_MEMORY_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                 "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def memory_bytes(value: int | str | None) -> int | None:
    """``4096``, ``"512MB"``, ``"4 GiB"`` -> bytes (None stays None)."""
    if value is None or isinstance(value, int):
        return value
    text = value.strip().lower().replace(" ", "")
    num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(num):] or "b"
    if unit not in _MEMORY_UNITS or not num:
        raise ValueError(f"memory {value!r}: expected bytes or a number with a unit "
                         f"({', '.join(u.upper() for u in _MEMORY_UNITS)})")
    return int(float(num) * _MEMORY_UNITS[unit])


class Resources(_Strict):
    """What a stage asks of a cluster node (the Ray executor; the local pool runs stages one
    per worker slot). Unset fields take the stage kind's default (engine.runner.ray_executor)."""

    cpus: float | None = Field(None, gt=0, description="CPU cores (also the stage's threads)")
    gpus: float | None = Field(None, ge=0, description="GPUs (Ray sets CUDA_VISIBLE_DEVICES)")
    memory: int | str | None = Field(None, description="bytes, or e.g. '4GB', '512MiB'")

    @model_validator(mode="after")
    def _memory(self):
        if self.memory is not None and memory_bytes(self.memory) <= 0:
            raise ValueError(f"memory {self.memory!r} must be positive")
        return self


class _Stage(_Strict):
    """What every stage has: its kind, its name, and what it asks of a cluster node."""

    resources: Resources | None = Field(None, description="cpus / gpus / memory on a Ray "
                                                          "cluster; not part of the identity")
    seed: int | None = Field(None, ge=0, le=2**32 - 1,
                             description="this stage's seed whatever the experiment's: a teacher "
                                         "pinned so that a --grid seed=... sweep shares it")

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data):
        """A table the file gives (``[stages.kd]``) is laid over the stage kind's own default
        for it, not over the table's class defaults: prune_l0's ``kd`` defaults to layerwise KD
        1.0, and ``[stages.kd] weight = 0.5`` must not silently turn that off."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            default = field.default
            if isinstance(default, BaseModel) and isinstance(out.get(name), dict):
                out[name] = {**default.model_dump(exclude_defaults=True), **out[name]}
        return out


class _DataParallel(_Stage):
    """A training stage that may run data-parallel: ``nproc`` processes per node (and
    ``nnodes`` nodes) launched with torchrun, DDP over NCCL on CUDA (a GPU per rank) or gloo on
    the CPU; each global batch is the one a single process would take, split across ranks."""

    nproc: int = Field(1, ge=1, le=64, description="processes (DDP ranks) per node")
    nnodes: int = Field(1, ge=1, le=64, description="nodes; more than 1 needs executor ray")


class TrainStage(_DataParallel):
    kind: Literal["train"]
    name: str
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    init_from: str | None = Field(None, description="stage whose weights start this one")


class KDConfig(_Strict):
    loss: Literal["yblank", "full", "none"] = Field(
        "yblank", description="yblank: 3-way KD on P(y), P(blank), P(rest) (Panchapagesan et "
                              "al. 2021); full: KL over the vocabulary; none: no output KD")
    weight: float = Field(1.0, ge=0.0, description="beta: weight of the KD term")
    temperature: float = Field(1.0, gt=0.0, description="tau: both losses' posteriors come from "
                                                          "logits / tau; the term is scaled by "
                                                          "tau^2")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="how beta moves over the stage's updates: constant, or from "
                                "weight at the first update to final_weight at the stage's "
                                "last update (max_steps, + finetune_steps for prune_l0), "
                                "linearly or along a half cosine (the layerwise gamma stays)")
    final_weight: float = Field(
        0.0, ge=0.0, description="beta at the stage's last update with a linear or cosine "
                                 "schedule (0: the teacher's pull fades out)")
    layerwise_weight: float = Field(0.0, ge=0.0, description="gamma: weight of layerwise KD")
    layerwise_distance: Literal["mse", "l1-cosine"] = "mse"
    layer_map: list[int] | None = Field(
        None, description="student block matched to each teacher block (-1: none); default "
                          "by relative depth")

    @model_validator(mode="after")
    def _schedule_needs_its_end(self):
        if self.final_weight and self.schedule == "constant":
            raise ValueError(f"final_weight = {self.final_weight} needs schedule = \"linear\" "
                             f"or \"cosine\" (with schedule = \"constant\" beta stays weight)")
        if self.schedule != "constant" and self.loss == "none":
            raise ValueError(f"schedule = \"{self.schedule}\" moves the output KD's weight, and "
                             f"loss = \"none\" has no output KD")
        return self


class DistillStage(_DataParallel):
    kind: Literal["distill"]
    name: str
    teacher: str = Field(description="the stage whose model teaches (a train or distill stage)")
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    kd: KDConfig = KDConfig()
    init_from: str | None = Field(None, description="stage whose weights start the student")


class MagnitudeConfig(_Strict):
    """Gradual magnitude pruning (engine.compress.prune_magnitude)."""

    sparsity: float = Field(0.6, ge=0.0, lt=1.0, description="final share of pruned weights")
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    start_step: int = Field(0, ge=0, description="first pruning step (t0)")
    end_step: int | None = Field(None, ge=1, description="final sparsity from this step on "
                                                         "(t1); default 70% of max_steps")
    every: int = Field(50, ge=1, description="steps between mask updates")
    scope: Literal["layer", "global"] = Field(
        "layer", description="layer: each tensor to the same sparsity; global: one threshold")
    layers: list[Literal["linear", "conv1d", "embedding", "lstm"]] = ["linear", "lstm"]
    parts: list[Literal["encoder", "predictor", "joiner"]] = ["encoder", "predictor", "joiner"]
    mask_every: int = Field(100, ge=1, description="log the masks every N steps (and at the end)")

    @model_validator(mode="after")
    def _order(self) -> "MagnitudeConfig":
        if self.initial_sparsity > self.sparsity:
            raise ValueError(f"initial_sparsity {self.initial_sparsity} is above sparsity "
                             f"{self.sparsity}")
        if self.end_step is not None and self.end_step <= self.start_step:
            raise ValueError(f"end_step {self.end_step} must come after start_step "
                             f"{self.start_step}")
        return self


class PruneMagnitudeStage(_Stage):
    kind: Literal["prune_magnitude"]
    name: str
    model: str = Field(description="the stage whose model is pruned (and, by default, teaches)")
    teacher: str | None = Field(None, description="KD from this stage's model (kd.loss); none: "
                                                  "no teacher")
    train: TrainConfig = TrainConfig()
    prune: MagnitudeConfig = MagnitudeConfig()
    kd: KDConfig = KDConfig()


class L0Config(_Strict):
    """Hard-concrete structured pruning (engine.compress.prune_l0)."""

    target: float = Field(0.5, gt=0.0, lt=1.0, description="share of the encoder blocks' "
                                                           "prunable parameters to remove")
    warmup_steps: int | None = Field(None, ge=0, description="steps over which the target rises "
                                                             "linearly from 0; default 60% of "
                                                             "max_steps")
    gate_lr: float = Field(0.05, gt=0.0, description="learning rate of the gates' log-alpha "
                                                     "(constant: no warm-up or decay)")
    lambda_lr: float = Field(0.1, gt=0.0, description="step of the multipliers' dual ascent "
                                                      "(per unit of sparsity gap)")
    penalty: float = Field(100.0, ge=0.0, description="rho: fixed weight of (s - t)^2 beside "
                                                      "the learned lambda2 (damps overshoot)")
    init_keep: float = Field(0.95, gt=0.0, lt=1.0, description="initial P(gate != 0), "
                                                              "each gate's p_open at step 0")
    units: list[Literal["modules", "heads", "ffn", "conv"]] = Field(
        ["modules", "heads", "ffn", "conv"], min_length=1, description="what the gates act on")
    finetune_steps: int = Field(0, ge=0, description="steps of training of the pruned dense "
                                                     "model (with KD when a teacher is set)")
    mask_every: int = Field(100, ge=1, description="log the gates every N steps (and at the end)")


class PruneL0Stage(_Stage):
    kind: Literal["prune_l0"]
    name: str
    model: str = Field(description="the stage whose model is pruned")
    teacher: str | None = Field(None, description="layerwise / output KD from this stage's model")
    train: TrainConfig = TrainConfig()
    prune: L0Config = L0Config()
    kd: KDConfig = KDConfig(loss="none", layerwise_weight=1.0)


class LASModelConfig(_Strict):
    """Sizes of a LAS rescorer (engine.models.las)."""

    embed_dim: int = Field(128, ge=8)
    layers: list[int] = Field([256], min_length=1, description="hidden units of each LSTM layer")
    attn_dim: int = Field(128, ge=8)
    out_dim: int = Field(256, ge=8)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class TwoPassConfig(_Strict):
    nbest: int = Field(4, ge=1, description="first-pass hypotheses the LAS rescores")
    tune_utterances: int = Field(100, ge=1, description="dev utterances that choose lambda")


class LASKDConfig(_Strict):
    weight: float = Field(1.0, ge=0.0, description="weight of the token-level KL to the teacher")
    temperature: float = Field(1.0, gt=0.0)
    ce_weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy")


class LASTrainStage(_Stage):
    kind: Literal["las_train"]
    name: str
    model: str = Field(description="the stage whose model gets a LAS (its encoder frozen)")
    las: LASModelConfig = LASModelConfig()
    train: TrainConfig = TrainConfig()
    twopass: TwoPassConfig = TwoPassConfig()


class LASDistillStage(_Stage):
    kind: Literal["las_distill"]
    name: str
    model: str = Field(description="the student (an RNN-T) whose frozen encoder the LAS reads")
    teacher: str = Field(description="a two-pass model (las_train, las_distill or finetune)")
    las: LASModelConfig = LASModelConfig()
    train: TrainConfig = TrainConfig()
    kd: LASKDConfig = LASKDConfig()
    twopass: TwoPassConfig = TwoPassConfig()


class FinetuneStage(_Stage):
    kind: Literal["finetune"]
    name: str
    model: str = Field(description="a two-pass model: every part of it is trained")
    teacher: str | None = Field(None, description="a two-pass teacher for the KD terms")
    train: TrainConfig = TrainConfig()
    kd: KDConfig = KDConfig(loss="none")
    las_weight: float = Field(1.0, ge=0.0, description="weight of the LAS cross-entropy")
    las_kd_weight: float = Field(0.0, ge=0.0, description="weight of KL to the teacher's LAS")
    las_temperature: float = Field(1.0, gt=0.0)
    twopass: TwoPassConfig = TwoPassConfig()


class EvaluateStage(_Stage):
    kind: Literal["evaluate"]
    name: str
    model: str
    splits: list[str] = ["test-clean", "test-other"]
    decoding: Literal["greedy", "beam"] = "greedy"
    beam: int = Field(4, ge=1)
    streaming: bool = Field(False, description="decode chunk by chunk (streaming models only)")
    max_utterances: int | None = Field(None, ge=1)
    accounting_utterances: int = Field(20, ge=1, description="utterances of each split that "
                                                             "RTF and MACs are measured on")
    runtime: Literal["torch", "torch-int8", "sherpa-onnx", "onnxruntime"] = Field(
        "torch", description="torch: the lab's PyTorch decoder; torch-int8: PyTorch dynamic "
                             "int8; sherpa-onnx / onnxruntime: the sherpa-onnx export of the "
                             "model (an export stage with format = 'sherpa-onnx')")
    int8: bool = Field(False, description="sherpa-onnx / onnxruntime: score the *.int8.onnx files")
    device: str = Field("auto", pattern=DEVICE_PATTERN,
                        description="runtime torch: where the model decodes (auto: CUDA when "
                                    "present); RTF and MACs are always measured on the CPU")
    export: str | None = Field(None, description="the sherpa-onnx export stage to score "
                                                 "(default: the last one of this model)")

    @model_validator(mode="after")
    def _runtime(self):
        onnx = self.runtime in ("sherpa-onnx", "onnxruntime")
        if onnx and (self.decoding != "greedy" or self.streaming):
            raise ValueError(f"runtime = {self.runtime!r} decodes greedily and offline; "
                             f"decoding = {self.decoding!r}, streaming = {self.streaming} are "
                             f"for runtime = 'torch'")
        if self.int8 and not onnx:
            raise ValueError("int8 = true picks the int8 ONNX files of runtime 'sherpa-onnx' or "
                             "'onnxruntime'; for PyTorch's int8 use runtime = 'torch-int8'")
        if self.export and not onnx:
            raise ValueError("export names the ONNX folder of runtime 'sherpa-onnx' or "
                             "'onnxruntime'")
        return self


class ExportStage(_Stage):
    kind: Literal["export"]
    name: str
    model: str
    format: Literal["torch", "sherpa-onnx"] = Field(
        "torch", description="torch: one model.pt; sherpa-onnx: encoder/decoder/joiner.onnx + "
                             "tokens.txt (stateless predictors only)")
    int8: bool = Field(False, description="sherpa-onnx: also *.int8.onnx (onnxruntime dynamic "
                                          "quantization of MatMul weights)")
    keep_fp32: list[str] = Field(default_factory=list,
                                 description="module types the int8 files keep fp32")
    sensitivity: bool = Field(False, description="run the per-module int8 sensitivity sweep on "
                                                 "the dev split; what costs > tolerance stays fp32")
    tolerance: float = Field(0.5, ge=0.0, description="WER points an int8 module type may cost")
    sensitivity_utterances: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _format(self):
        if self.format == "torch" and (self.int8 or self.sensitivity or self.keep_fp32):
            raise ValueError("int8, sensitivity and keep_fp32 apply to format = 'sherpa-onnx'")
        if self.sensitivity and not self.int8:
            raise ValueError("sensitivity = true decides what int8 keeps fp32; set int8 = true")
        bad = sorted(set(self.keep_fp32) - set(MODULE_TYPES))
        if bad:
            raise ValueError(f"keep_fp32: unknown module types {bad}; allowed: "
                             f"{', '.join(MODULE_TYPES)}")
        return self


Stage = Annotated[Union[TrainStage, DistillStage, PruneMagnitudeStage, PruneL0Stage,
                        LASTrainStage, LASDistillStage, FinetuneStage, EvaluateStage,
                        ExportStage], Field(discriminator="kind")]
STAGE_KINDS = ("distill", "evaluate", "export", "finetune", "las_distill", "las_train",
               "prune_l0", "prune_magnitude", "train")
# the stage kinds that make a model
MODEL_KINDS = ("distill", "finetune", "las_distill", "las_train", "prune_l0", "prune_magnitude",
               "train")


def stage_inputs(st) -> list[tuple[str, str]]:
    """(key, stage name) of every model a stage takes from earlier stages."""
    if st.kind in ("train", "distill"):
        refs = [("teacher", st.teacher)] if st.kind == "distill" else []
        return refs + ([("init_from", st.init_from)] if st.init_from else [])
    if st.kind in ("prune_magnitude", "prune_l0", "las_train", "las_distill", "finetune"):
        teacher = getattr(st, "teacher", None)
        return [("model", st.model)] + ([("teacher", teacher)]
                                        if teacher and teacher != st.model else [])
    return [("model", st.model)]


class Experiment(_Strict):
    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list, description="labels the explorer filters by")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="every random draw starts from it")
    data: DataConfig = DataConfig()
    resources: dict[str, Resources] = Field(
        default_factory=dict, description="per stage kind, e.g. [resources.train] cpus = 4: "
                                          "what its stages ask of a Ray node")
    stages: list[Stage] = Field(min_length=1)

    def seed_of(self, stage) -> int:
        """The seed a stage runs with: its own ``seed`` where the file pins one, else the
        experiment's."""
        return self.seed if stage.seed is None else stage.seed

    @model_validator(mode="after")
    def _graph(self) -> "Experiment":
        bad = sorted(set(self.resources) - set(STAGE_KINDS))
        if bad:
            raise ValueError(f"resources: unknown stage kind {bad[0]!r}; allowed: "
                             f"{', '.join(STAGE_KINDS)}")
        seen: dict[str, str] = {}
        for i, st in enumerate(self.stages):
            if st.name in seen:
                raise ValueError(f"stages[{i}].name: duplicate stage name {st.name!r}")
            for key, ref in stage_inputs(st):
                if ref not in seen:
                    raise ValueError(f"stages[{i}].{key}: no earlier stage named {ref!r}; "
                                     f"earlier stages: {sorted(seen) or 'none'} (a stage takes "
                                     f"only from stages above it, so a graph has no cycles)")
                if seen[ref] not in MODEL_KINDS:
                    raise ValueError(f"stages[{i}].{key}: stage {ref!r} is a {seen[ref]} stage "
                                     f"and makes no model")
            if st.kind == "evaluate" and st.runtime in ("sherpa-onnx", "onnxruntime"):
                exports = [e for e in self.stages[:i] if e.kind == "export"
                           and e.model == st.model and e.format == "sherpa-onnx"]
                if st.export is not None:
                    named = [e for e in self.stages[:i] if e.name == st.export]
                    if not named or named[0].kind != "export" or named[0].format != "sherpa-onnx":
                        raise ValueError(f"stages[{i}].export: no earlier sherpa-onnx export "
                                         f"stage named {st.export!r}")
                    if named[0].model != st.model:
                        raise ValueError(f"stages[{i}].export: {st.export!r} exports "
                                         f"{named[0].model!r}, not {st.model!r}")
                    exports = named
                if not exports:
                    raise ValueError(f"stages[{i}]: runtime = {st.runtime!r} needs an earlier "
                                     f"export stage of model {st.model!r} with format = "
                                     f"'sherpa-onnx'")
                if st.int8 and not exports[-1].int8:
                    raise ValueError(f"stages[{i}].int8: export {exports[-1].name!r} writes no "
                                     f"int8 files (set int8 = true there)")
            seen[st.name] = st.kind
        return self

    def stage(self, name: str):
        return next(s for s in self.stages if s.name == name)


def _loc(loc: tuple) -> str:
    out, after_index = "", False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif after_index and part in STAGE_KINDS:
            pass  # pydantic's union-branch tag right after stages[i], not a key the user wrote
        else:
            out += ("." if out else "") + str(part)
        after_index = isinstance(part, int)
    return out


def _message(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        where = _loc(err["loc"])
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            lines.append(f"{where}.kind: unknown stage kind {tag!r}; allowed: "
                         f"{', '.join(STAGE_KINDS)}")
        elif err["type"] == "union_tag_not_found":
            lines.append(f"{where}: a stage needs a kind; allowed: {', '.join(STAGE_KINDS)}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif err["type"] == "literal_error":
            lines.append(f"{where}: {err['input']!r} is not allowed; "
                         f"expected {err['ctx']['expected']}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = f" (got {err['input']!r})" if where and not isinstance(err["input"], dict) else ""
            lines.append(f"{where}: {msg}{got}" if where else msg)
    return "; ".join(lines)


def split_problems(exp: Experiment, have: list[str] | tuple) -> list[str]:
    """Fields naming a split the corpus lacks (``have``: its splits), as 'FIELD: ...' lines."""
    out, have = [], list(have)

    def need(field: str, split: str, why: str = "") -> None:
        if split not in have:
            out.append(f"{field}: {exp.data.corpus} has no split {split!r}{why} (it has "
                       f"{', '.join(have)})")

    need("data.train_split", exp.data.train_split)
    for i, st in enumerate(exp.stages):
        for j, split in enumerate(getattr(st, "splits", None) or []):
            need(f"stages[{i}].splits[{j}]", split)
        train = getattr(st, "train", None)
        if train is not None and train.eval_every:
            if train.eval_splits:
                for j, split in enumerate(train.eval_splits):
                    need(f"stages[{i}].train.eval_splits[{j}]", split)
            else:
                need(f"stages[{i}].train.eval_every", exp.data.dev_split,
                     " (eval_every evaluates data.dev_split; set eval_splits)")
    return out


def parse_experiment(data: dict, source: str = "<experiment>") -> Experiment:
    try:
        return Experiment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_message(e)}") from None


def read_experiment(path: Path | str) -> dict:
    """The experiment file as plain data (sweeps edit it before parsing), named after the file
    unless it names itself."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such experiment file")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.toml"))[:5]
        raise ConfigError(f"{path}: a folder, not an experiment file"
                          + (f"; it holds {', '.join(found)}" if found else ""))
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file ({e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    data = toml_data(text, str(path))
    data.setdefault("name", path.stem)
    return data


def toml_data(text: str, source: str) -> dict:
    """TOML text as plain data; a syntax error names ``source`` and the line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None


def load_experiment(path: Path | str) -> Experiment:
    return parse_experiment(read_experiment(path), str(path))


# ----- writing TOML (the explorer previews the experiment it will submit) ----------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} ({type(v).__name__}) to TOML")


def to_toml(data: dict, _prefix: str = "") -> str:
    """``data`` as TOML that ``tomllib`` reads back equal (None values are left out: TOML has no
    null, and every optional field defaults to None)."""
    lines, tables = [], []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{_prefix}{k}"
        if isinstance(v, dict):
            out += f"\n[{name}]\n" + to_toml(v, name + ".")
        else:
            for item in v:
                out += f"\n[[{name}]]\n" + to_toml(item, name + ".")
    return out

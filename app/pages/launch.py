"""Launch: pick an experiment file or build one stage by stage, see the resolved TOML, submit a
run or a sweep. Validation is the CLI's own (engine.config), with the same messages."""

import uuid
from pathlib import Path

import streamlit as st

from app import actions, serve, ui
from engine.config import (MODEL_KINDS, ConfigError, EvaluateStage, KDConfig, ModelConfig,
                           TrainConfig, parse_experiment, to_toml, toml_data)

st.title("Launch")
home = ui.home()
# the experiments of the folder the explorer was started in, else the lab's own
EXPERIMENTS = Path("experiments") if Path("experiments").is_dir() else serve.ROOT / "experiments"
PRESETS = list(ModelConfig.model_fields["preset"].annotation.__args__)
RUNTIMES = list(EvaluateStage.model_fields["runtime"].annotation.__args__)
LOSSES = list(ModelConfig.model_fields["loss"].annotation.__args__)
SPLITS = ["dev", "test-clean", "test-other"]
KD_LOSSES = list(KDConfig.model_fields["loss"].annotation.__args__)

mode = st.radio("Experiment", ["from experiments/", "build one"], horizontal=True, key="mode")


def file_experiment() -> tuple[dict | None, str]:
    files = sorted(EXPERIMENTS.glob("*.toml"))
    if not files:
        st.warning(f"no experiment files in {EXPERIMENTS.resolve()}")
        return None, ""
    names = [f.name for f in files]
    ui.seed("file", names, ui.param("file"), "tiny.toml")
    name = st.selectbox("File", names, key="file")
    ui.set_params(file=name)
    text = st.text_area("TOML (edit before submitting; the file itself is not changed)",
                        (EXPERIMENTS / name).read_text(), height=320, key=f"text-{name}")
    source = str(EXPERIMENTS / name)
    data = toml_data(text, source)
    data.setdefault("name", Path(name).stem)
    return data, source


def train_form(sid: str, st_: dict) -> None:
    m = st_.setdefault("model", {})
    c = st.columns(4)
    m["preset"] = c[0].selectbox("preset", PRESETS, index=ui.pick(PRESETS, m.get("preset", "tiny")),
                                 key=f"preset-{sid}")
    m["loss"] = c[1].selectbox("loss", LOSSES, key=f"loss-{sid}")
    m["predictor"] = c[2].selectbox("predictor", ["stateless", "lstm"], key=f"pred-{sid}")
    m["streaming"] = c[3].checkbox("streaming", key=f"stream-{sid}")
    c = st.columns(4)
    layers = int(c[0].number_input("layers (0: the preset's)", 0, None, 0, key=f"layers-{sid}"))
    m["blocks"] = layers or None
    m["share"] = c[1].selectbox("weight sharing", ["none", "repeat", "cycle"], key=f"share-{sid}")
    if m["share"] != "none":
        m["physical_blocks"] = int(c[2].number_input("physical blocks", 1, None, 2,
                                                     key=f"phys-{sid}"))
    else:
        m.pop("physical_blocks", None)
    limits_form(sid, st_)


def limits_form(sid: str, st_: dict) -> None:
    t = st_.setdefault("train", {})
    c = st.columns(4)
    t["max_steps"] = int(c[0].number_input("max steps", 1, None, t.get("max_steps", 1000),
                                           key=f"steps-{sid}"))
    minutes = c[1].number_input("max minutes (0: none)", 0.0, None, 0.0, key=f"min-{sid}")
    t["max_minutes"] = minutes or None
    t["peak_lr"] = c[2].number_input("peak lr", 0.0, 1.0, TrainConfig().peak_lr, format="%.1e",
                                     key=f"lr-{sid}")
    t["eval_every"] = int(c[3].number_input("evaluate every N steps (0: off)", 0, None, 0,
                                            key=f"ev-{sid}"))


def distill_form(sid: str, st_: dict, models: list[str]) -> None:
    c = st.columns(4)
    st_["teacher"] = c[0].selectbox("teacher (a model stage above)", models or ["(none)"],
                                    key=f"teacher-{sid}")
    kd = st_.setdefault("kd", {})
    kd["loss"] = c[1].selectbox("KD loss", KD_LOSSES, key=f"kdloss-{sid}")
    kd["weight"] = c[2].number_input("KD weight (beta)", 0.0, None, 1.0, key=f"kdw-{sid}")
    kd["layerwise_weight"] = c[3].number_input("layerwise weight (gamma)", 0.0, None, 0.0,
                                               key=f"kdl-{sid}")
    train_form(sid, st_)


def prune_source(sid: str, st_: dict, models: list[str]) -> None:
    c = st.columns(2)
    st_["model"] = c[0].selectbox("model to prune (a model stage above)", models or ["(none)"],
                                  key=f"model-{sid}")
    choices = ["(no KD)"] + models
    t = c[1].selectbox("teacher for KD (usually the unpruned model)", choices,
                       index=ui.pick(choices, st_.get("teacher") or "(no KD)"),
                       key=f"teacher-{sid}")
    st_["teacher"] = None if t == "(no KD)" else t


def prune_magnitude_form(sid: str, st_: dict, models: list[str]) -> None:
    prune_source(sid, st_, models)
    p = st_.setdefault("prune", {})
    c = st.columns(4)
    p["sparsity"] = c[0].number_input("final sparsity", 0.0, 0.99, 0.6, 0.05, key=f"sp-{sid}")
    end = c[1].number_input("final sparsity at step (0: 70% of the steps)", 0, None, 0,
                            key=f"spend-{sid}")
    p["end_step"] = int(end) or None
    p["every"] = int(c[2].number_input("new mask every N steps", 1, None, 50, key=f"spev-{sid}"))
    p["scope"] = c[3].selectbox("scope", ["layer", "global"], key=f"spsc-{sid}")
    if st_.get("teacher"):
        st_["kd"] = {"loss": st.selectbox("KD loss", ["yblank", "full"], key=f"spkd-{sid}")}
    else:
        st_.pop("kd", None)
    limits_form(sid, st_)


def prune_l0_form(sid: str, st_: dict, models: list[str]) -> None:
    prune_source(sid, st_, models)
    p = st_.setdefault("prune", {})
    c = st.columns(4)
    p["target"] = c[0].number_input("target (share of prunable parameters removed)", 0.05, 0.95,
                                    0.5, 0.05, key=f"l0t-{sid}")
    p["finetune_steps"] = int(c[1].number_input("fine-tuning steps of the pruned model", 0,
                                                None, 100, key=f"l0ft-{sid}"))
    p["gate_lr"] = c[2].number_input("gate learning rate", 0.001, 1.0, 0.05, key=f"l0lr-{sid}",
                                     format="%.3f")
    p["units"] = c[3].multiselect("gates on", ["modules", "heads", "ffn", "conv"],
                                  ["modules", "heads", "ffn", "conv"], key=f"l0u-{sid}")
    if st_.get("teacher"):
        st_["kd"] = {"loss": "none", "layerwise_weight": st.number_input(
            "layerwise KD weight (gamma)", 0.0, None, 1.0, key=f"l0kd-{sid}")}
    else:
        st_.pop("kd", None)
    limits_form(sid, st_)


def evaluate_form(sid: str, st_: dict, models: list[str]) -> None:
    c = st.columns(4)
    st_["model"] = c[0].selectbox("model (a train stage above)", models or ["(none)"],
                                  key=f"model-{sid}")
    st_["splits"] = c[1].multiselect("splits", SPLITS, EvaluateStage.model_fields["splits"].default,
                                     key=f"splits-{sid}")
    st_["decoding"] = c[2].selectbox("decoding", ["greedy", "beam"], key=f"dec-{sid}")
    n = c[3].number_input("max utterances (0: all)", 0, None, 0, key=f"maxu-{sid}")
    st_["max_utterances"] = int(n) or None
    c = st.columns(4)
    st_["runtime"] = c[0].selectbox("runtime", RUNTIMES, key=f"rt-{sid}")
    st_["int8"] = c[1].checkbox("int8 ONNX files", key=f"eint8-{sid}",
                                disabled=st_["runtime"] not in ("sherpa-onnx", "onnxruntime"))


def export_form(sid: str, st_: dict, models: list[str]) -> None:
    c = st.columns(4)
    st_["model"] = c[0].selectbox("model", models or ["(none)"], key=f"model-{sid}")
    st_["format"] = c[1].selectbox("format", ["torch", "sherpa-onnx"], key=f"fmt-{sid}")
    onnx = st_["format"] == "sherpa-onnx"
    st_["int8"] = c[2].checkbox("int8", key=f"int8-{sid}", disabled=not onnx) and onnx
    st_["sensitivity"] = c[3].checkbox("sensitivity sweep on dev", key=f"sens-{sid}",
                                       disabled=not st_["int8"]) and st_["int8"]


def built_experiment() -> tuple[dict, str]:
    c = st.columns([2, 2, 1, 1])
    data = {"name": c[0].text_input("name", "my-experiment", key="name"),
            "tags": [t.strip() for t in c[1].text_input("tags (comma-separated)", "",
                                                        key="tags").split(",") if t.strip()],
            "seed": int(c[2].number_input("seed", 0, None, 0, key="seed")),
            "data": {"corpus": c[3].text_input("corpus", "builtin:tiny", key="corpus")}}
    data["data"]["vocab_size"] = int(st.number_input("vocabulary size", 8, 8192, 256, key="vocab"))
    stages = st.session_state.setdefault("stages", [
        {"kind": "train", "name": "model"},
        {"kind": "evaluate", "name": "eval", "model": "model"}])
    for i, st_ in enumerate(stages):
        sid = st_.setdefault("id", uuid.uuid4().hex[:8])  # widget keys survive a removal
        with st.container(border=True):
            c = st.columns([1, 2, 1], vertical_alignment="bottom")
            c[0].markdown(f"**{i + 1}. {st_['kind']}**")
            st_["name"] = c[1].text_input("stage name", st_["name"], key=f"name-{sid}")
            if c[2].button("remove", key=f"rm-{sid}"):
                stages.pop(i)
                st.rerun()
            models = [s["name"] for s in stages[:i] if s["kind"] in MODEL_KINDS]
            if st_["kind"] == "train":
                train_form(sid, st_)
            elif st_["kind"] == "distill":
                distill_form(sid, st_, models)
            elif st_["kind"] == "evaluate":
                evaluate_form(sid, st_, models)
            elif st_["kind"] == "prune_magnitude":
                prune_magnitude_form(sid, st_, models)
            elif st_["kind"] == "prune_l0":
                prune_l0_form(sid, st_, models)
            elif st_["kind"] == "export":
                export_form(sid, st_, models)
            else:
                st_["model"] = st.selectbox("model", models or ["(none)"], key=f"model-{sid}")
    c = st.columns([1, 1, 3], vertical_alignment="bottom")
    kind = c[0].selectbox("add a stage", ["train", "distill", "prune_magnitude", "prune_l0",
                                          "evaluate", "export"], key="add_kind")
    if c[1].button("add stage"):
        last_model = next((s["name"] for s in reversed(stages) if s["kind"] in MODEL_KINDS), "")
        ref = {"train": {}, "distill": {"teacher": last_model},
               "prune_magnitude": {"model": last_model, "teacher": last_model},
               "prune_l0": {"model": last_model, "teacher": last_model}}.get(
                   kind, {"model": last_model})
        stages.append({"kind": kind, "name": f"{kind}{len(stages) + 1}", **ref})
        st.rerun()
    data["stages"] = [{k: v for k, v in s.items() if k != "id"} for s in stages]
    return data, "the Launch form"


try:
    data, source = file_experiment() if mode == "from experiments/" else built_experiment()
except ConfigError as e:
    data, source = None, ""
    st.error(str(e))

grid_text = st.text_area("Sweep grid (optional): one FIELD=V1,V2 per line, as `asrlab sweep "
                         "--grid`", "", key="grid",
                         placeholder="stages.model.train.peak_lr=1e-3,2e-3")
grids = [g.strip() for g in grid_text.splitlines() if g.strip()]

with st.expander("Where it runs: this machine or a Ray cluster"):
    executor = st.radio("Executor", ["local", "ray"], horizontal=True, key="executor",
                        help="local: the supervisor's worker pool here; ray: each stage a Ray "
                             "task (resources per stage kind, [resources.KIND])")
    address = storage = None
    if executor == "ray":
        address = st.text_input("Ray address", "", key="ray_address",
                                placeholder="head:6379 (empty: RAY_ADDRESS, else a local Ray)"
                                ).strip() or None
        storage = st.text_input("Shared storage for run folders", "", key="storage",
                                placeholder="/mnt/shared/asrlab-runs (empty: the lab's runs/)"
                                ).strip() or None

if data is not None:
    try:
        exp = parse_experiment(data, source)
    except ConfigError as e:
        exp = None
        st.error(str(e))
    if exp is not None:
        with st.expander("resolved experiment (TOML)", expanded=mode == "build one"):
            st.code(to_toml(exp.model_dump(mode="json")), language="toml")
        label = f"Submit sweep ({len(grids)} grid field(s))" if grids else "Submit run"
        if st.button(label, type="primary", key="submit"):
            try:
                ids = actions.submit(home, data, source, grids, executor, address, storage)
            except actions.USER_ERRORS as e:
                st.error(str(e))
            else:
                st.success(f"queued {len(ids)} run(s): {', '.join(ids)}")
                st.page_link("app/pages/runs.py", label="watch on the Runs page",
                             icon=":material/monitoring:", query_params={"run": ids[0]})

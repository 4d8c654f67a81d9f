"""Masks: what a pruning stage kept, block by block; how the masks formed over training; which
heads died first; two pruned models side by side."""

import streamlit as st

from app import charts, data, ui

st.title("Pruning masks")
home = ui.home()

stages = data.mask_stages(home)
if stages.empty:
    st.info("No pruning stage has logged masks yet. Run one, e.g. `asrlab run "
            "experiments/tiny_l0.toml` (structured, hard-concrete gates) or "
            "`experiments/tiny_sparse.toml` (magnitude), and its masks appear here while it "
            "trains.")
    st.stop()

keys = list(stages["key"])
labels = dict(zip(stages["key"], stages["label"]))
wanted = f"{ui.param('run')}/{ui.param('stage')}" if ui.param("run") else None
ui.seed("pruned", keys, wanted)
key = st.selectbox("Pruning stage", keys, format_func=labels.get, key="pruned")
run_id, stage = key.rsplit("/", 1)
steps = data.mask_steps(home, run_id, stage)
want_step = int(ui.param("step")) if (ui.param("step") or "").isdigit() else steps[-1]
if "mask_step" not in st.session_state or st.session_state.get("mask_for") != key \
        or st.session_state["mask_step"] not in steps:
    st.session_state["mask_step"] = want_step if want_step in steps else steps[-1]
    st.session_state["mask_for"] = key
step = st.select_slider("Training step (drag to watch the masks form)", steps, key="mask_step") \
    if len(steps) > 1 else steps[0]
ui.set_params(run=run_id, stage=stage, step=step)

m = data.masks(home, run_id, stage, step)
structured = m["unit"].isin(["units", "heads", "channels"]).any()
blocks = m[(m["module"] == "block") & (m["block"] >= 0)]
total = float((blocks["size"] * blocks["kept_fraction"]).sum() / max(blocks["size"].sum(), 1))
c = st.columns(4)
c[0].metric("encoder parameters kept", f"{total:.1%}", f"{total - 1:.1%}")
if len(blocks):
    worst = blocks.sort_values("kept_fraction").iloc[0]
    c[1].metric("block that lost most", f"block {int(worst.block)}",
                help=f"keeps {worst.kept_fraction:.0%} of its prunable parameters")
heads = m[m["unit"] == "heads"]
if len(heads):
    kept_heads = sum(sum(k) for k in heads["kept"] if k)
    all_heads = int(heads["size"].sum())
    c[2].metric("attention heads kept", f"{kept_heads} of {all_heads}")
    deaths = data.head_deaths(home, run_id, stage)
    dead = deaths.dropna(subset=["died_at"])
    if len(dead):
        first = dead.sort_values(["died_at", "block", "head"]).iloc[0]
        c[3].metric("first head to die",
                    f"b{int(first['block'])} h{int(first['head'])} @ {int(first['died_at'])}",
                    help="block b, head h, and the step from which it stayed pruned")
st.caption(f"Step {step} of {steps[-1]}; {len(steps)} logged mask snapshots. "
           + ("Structured (hard-concrete) gates: pruned units are physically removed at the end."
              if structured else "Unstructured (magnitude) masks: weights are zeroed, stored "
              "sparse; dense kernels run them no faster."))

st.subheader("Kept per block")
st.plotly_chart(charts.kept_by_block(m), key="by_block")

if structured:
    st.subheader("Every unit, block by block")
    o = st.columns([2, 2, 6])
    colour = o[0].radio("Colour", ["kept", "prob"], horizontal=True, key="colour",
                        format_func={"kept": "kept / pruned", "prob": "gate P(open)"}.get)
    ranked = o[1].checkbox("rank units by gate", value=True, key="ranked")
    st.plotly_chart(charts.unit_heatmaps(m, colour, ranked), key="units")
else:
    st.subheader("Kept share of each pruned tensor")
    st.plotly_chart(charts.tensor_heatmap(m), key="tensors")

hist = data.mask_history(home, run_id, stage)
if hist["step"].nunique() > 1:
    st.subheader("How the masks formed")
    st.plotly_chart(charts.mask_history(hist), key="history")

if len(heads):
    deaths = data.head_deaths(home, run_id, stage)
    if len(deaths):
        st.subheader("Which heads died first")
        st.caption("The step from which each head stayed pruned; blank cells are alive.")
        st.plotly_chart(charts.head_deaths(deaths), key="deaths")

st.subheader("Side by side")
others = ["none"] + [k for k in keys if k != key]
ui.seed("other", others, ui.param("vs"), "none")
other = st.selectbox("Compare with another pruned model (at its last step)", others,
                     format_func=lambda k: labels.get(k, "none"), key="other")
ui.set_params(vs=None if other == "none" else other)
if other != "none":
    o_run, o_stage = other.rsplit("/", 1)
    o_masks = data.masks(home, o_run, o_stage, data.mask_steps(home, o_run, o_stage)[-1])
    left, right = st.columns(2)
    left.plotly_chart(charts.kept_by_block(m, labels[key]), key="side_a")
    right.plotly_chart(charts.kept_by_block(o_masks, labels[other]), key="side_b")
    if structured and o_masks["unit"].isin(["units", "heads", "channels"]).any():
        left.plotly_chart(charts.unit_heatmaps(m), key="side_units_a")
        right.plotly_chart(charts.unit_heatmaps(o_masks), key="side_units_b")

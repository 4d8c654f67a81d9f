"""Pareto: every evaluated model as (size, WER with interval); the non-dominated front; details
of the selected models."""

import pandas as pd
import streamlit as st

from app import charts, data, pareto, ui

st.title("Pareto front")
home = ui.home()

splits = data.splits(home)
if not splits:
    ui.no_store_yet()
    st.stop()

axes, choices = list(data.AXES), list(data.CHOICES)
c = st.columns([1, 1.4, 1, 0.8, 0.6], vertical_alignment="bottom")
ui.seed("split", splits, ui.param("split"), "test-clean")
split = c[0].selectbox("Split", splits, key="split")
ui.seed("x", axes, ui.param("x"))
x = c[1].selectbox("Size axis", axes, format_func=data.AXES.get, key="x")
ui.seed("choice", choices, ui.param("choice"))
choice = c[2].selectbox("Which evaluation", choices, format_func=data.CHOICES.get, key="choice",
                        help="a model is evaluated at several steps (periodic dev evaluations, "
                             "the final evaluate stage): compare the last, the best on dev, or "
                             "the last at or before step N")
step = None
if choice == "step":
    st.session_state.setdefault("step", max(0, ui.int_param("step", 1000)))
    step = int(c[3].number_input("N", 0, None, key="step"))
st.session_state.setdefault("log", ui.param("log", "1") == "1")
log_x = c[4].checkbox("log x", key="log")

models = data.models(home, split, choice, step)
# WERs of different test sets do not share an axis: one corpus at a time, by default the one
# most models were scored on
corpora = data.corpora(models)
ui.seed("corpus", corpora, ui.param("corpus"))  # default: the first, the most common
corpus = None
if corpora:
    corpus = st.selectbox("corpus", corpora, key="corpus",
                          help="the corpus the models' test split came from; every built-in tier "
                               "names its utterances alike, so WERs of two corpora are not "
                               "comparable") if len(corpora) > 1 else corpora[0]
other_corpora = int((models["corpus"] != corpus).sum()) if corpus else 0
models = models[models["corpus"] == corpus] if corpus else models
tags = data.run_tags(home)
st.session_state.setdefault("superseded", ui.param("superseded", "0") == "1")
with st.expander("Filters", expanded=bool(ui.param_list("runs") or ui.param_list("method")
                                          or ui.param_list("tag")
                                          or st.session_state["superseded"])):
    f = st.columns(3)
    # runs that computed a model here, then runs that only reused them (a `--reuse` sweep's)
    run_ids = list(dict.fromkeys(models["run_id"]))
    run_ids += data.runs_reusing(home, run_ids)
    ui.seed_many("runs", run_ids, ui.param_list("runs"))
    keep_runs = f[0].multiselect("runs", run_ids, key="runs")
    methods = sorted(set(models["method"]))
    ui.seed_many("method", methods, ui.param_list("method"))
    keep_methods = f[1].multiselect("methods", methods, key="method")
    all_tags = sorted({t for ts in tags.values() for t in ts})
    ui.seed_many("tag", all_tags, ui.param_list("tag"))
    keep_tags = f[2].multiselect("tags", all_tags, key="tag")
    show_old = st.checkbox(
        "show results of an older recipe or beam search", key="superseded",
        help="evaluations of stages whose stored identity is not the one the current code "
             "computes for their settings (RECIPE_VERSION, SEARCH_VERSION or the sherpa-onnx "
             "format version has moved on): kept in the store, hidden by default, never reused")
if keep_runs:  # the runs' own models and those they reused from other runs
    mine = data.run_stages(home, keep_runs)
    models = models[[(r, e) in mine or (r, m) in mine for r, e, m in
                      zip(models["run_id"], models["stage"], models["model_stage"])]]
if keep_methods:
    models = models[models["method"].isin(keep_methods)]
if keep_tags:
    models = models[[bool(set(tags.get(r, [])) & set(keep_tags)) for r in models["run_id"]]]
hidden_old = 0 if show_old else int(models["superseded"].sum())
if not show_old:
    models = models[~models["superseded"].astype(bool)]
models = pareto.with_front(models.reset_index(drop=True), x)
missing = int(models[x].isna().sum())

ui.seed_many("sel", list(models["model"]), ui.param_list("models"))
selected = list(st.session_state["sel"])
ui.set_params(split=split, x=x, choice=choice, step=step, log="1" if log_x else "0",
              runs=keep_runs, method=keep_methods, tag=keep_tags,
              corpus=corpus if len(corpora) > 1 else None,
              superseded="1" if show_old else None)

if models.empty:
    st.warning(f"No model has an evaluation on {split} for this choice"
               + (f" at or before step {step}" if step is not None else "")
               + (f" ({hidden_old} computed by an older recipe or beam search are hidden: "
                  f"Filters)" if hidden_old else "") + ".")
    st.stop()

st.caption(f"{len(models)} models, {int(models['on_front'].sum())} on the front"
           + (f"; {missing} without a {data.AXES[x]} figure are left off the chart" if missing
              else "")
           + (f"; {other_corpora} scored on other corpora are left out (choose the corpus "
              f"above)" if other_corpora else "")
           + (f"; {hidden_old} computed by an older recipe or beam search are hidden (Filters)"
              if hidden_old else "")
           + ". Click or box-select points to open their details.")
event = st.plotly_chart(charts.pareto(models.dropna(subset=[x]), x, split, log_x, selected),
                        key="pareto_chart", on_select="rerun", selection_mode=("points", "box"))
clicked = pareto.selected_models(event)
if clicked != st.session_state.get("last_click", []):  # a new click or box, not a stale one
    st.session_state["last_click"] = clicked
    if clicked:
        selected = st.session_state["sel"] = clicked

show = ["model", "run_name", "model_stage", "method", "runtime", "step", "wer", "wer_lo", "wer_hi",
        "utterances", "params", "bytes", "macs_per_second", "rtf", "tags"]
num = {"wer": st.column_config.NumberColumn("WER %", format="%.2f"),
       "wer_lo": st.column_config.NumberColumn("CI low", format="%.2f"),
       "wer_hi": st.column_config.NumberColumn("CI high", format="%.2f"),
       "bytes": st.column_config.NumberColumn(format="%d"),
       "macs_per_second": st.column_config.NumberColumn("MACs/s", format="%.3e"),
       "rtf": st.column_config.NumberColumn(format="%.4f")}
st.subheader("On the front")
st.dataframe(models[models["on_front"]].sort_values(x)[show], hide_index=True, width="stretch",
             column_config=num)

labels = {r.model: data.model_label(r.run_id, r.run_name, r.model_stage, r.step)
          for r in models.itertuples()}
selected = st.multiselect("Selected models", list(labels), format_func=labels.get, key="sel")
ui.set_params(models=selected)

for key in selected:
    d = data.model_details(home, key)
    with st.container(border=True):
        st.markdown(f"#### {labels[key]}  \n`{key}`")
        ev = pd.DataFrame(d["evals"])
        if len(ev):
            ev["size"] = ev["bytes"].map(ui.human_bytes)
            st.dataframe(ev[["split", "wer", "wer_lo", "wer_hi", "utterances", "params",
                             "nonzero_params", "size", "macs_per_second", "rtf", "decoding",
                             "model"]], hide_index=True, width="stretch", column_config=num)
        if d["artifacts"]:
            st.dataframe(pd.DataFrame(d["artifacts"]), hide_index=True, width="stretch")
        cols = st.columns(3)
        cols[0].page_link("app/pages/listen.py", label="Listen to its worst utterances",
                          icon=":material/headphones:",
                          query_params={"models": selected, "split": split})
        others = [m for m in selected if m != key] or [
            m for m in models.sort_values("wer")["model"] if m != key][:1]
        if others:
            cols[1].page_link("app/pages/compare.py", label="Compare with " + labels[others[0]],
                              icon=":material/compare_arrows:",
                              query_params={"a": others[0], "b": key, "split": split})
        if d["run"]:
            with cols[2].popover("run config"):
                st.code(d["run"]["config"], language="json")

with st.expander(f"All {len(models)} models"):
    st.dataframe(models.sort_values("wer")[show + ["on_front"]], hide_index=True,
                 width="stretch", column_config=num)

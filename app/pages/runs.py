"""Runs: every run and stage with state, progress and last metrics, live; a stage's curves."""

import streamlit as st

from app import actions, charts, data, ui

st.title("Runs")
home = ui.home()
REFRESH_S = 2.0


@st.fragment(run_every=REFRESH_S)
def overview() -> None:
    runs = data.runs(home)
    if not runs:
        st.info("No runs yet: submit one on the Launch page or with `asrlab run "
                "experiments/tiny.toml`.")
        return
    df = data.stage_table(runs)
    counts = df.drop_duplicates("run")["run state"].value_counts()
    st.caption(" · ".join(f"{n} {state}" for state, n in counts.items())
               + f" · refreshed every {REFRESH_S:.0f} s")
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                    format="percent"),
        "loss": st.column_config.NumberColumn(format="%.3f")})


overview()

runs = data.runs(home)
if runs:
    ids = [r["run_id"] for r in runs]
    ui.seed("run", ids, ui.param("run"))
    run_id = st.selectbox("Run", ids, key="run")
    run = next(r for r in runs if r["run_id"] == run_id)
    stages = [s["name"] for s in run["stages"]]
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    ui.seed("stage", stages, ui.param("stage"))
    stage = c1.selectbox("Stage", stages, key="stage")
    ui.set_params(run=run_id, stage=stage)
    if c2.button("Cancel run", disabled=run["state"] not in ("queued", "running"),
                 width="stretch"):
        actions.cancel(home, run_id)
        st.toast(f"cancelling {run_id}")
    if c3.button("Resume run", disabled=run["state"] not in ("failed", "cancelled"),
                 width="stretch"):
        actions.resume(home, run_id)
        st.toast(f"resuming {run_id}")

    @st.fragment(run_every=REFRESH_S)
    def stage_view() -> None:
        curve = data.training_curve(home, run_id, stage)
        evals = data.stage_evals(home, run_id, stage)
        if len(curve) or len(evals):
            st.plotly_chart(charts.training_curves(curve, evals), key="curves")
        else:
            st.caption("No training metrics for this stage (yet).")
        zeroed = data.zeroed_losses(curve)
        if zeroed:
            st.warning(f"{zeroed['zeroed']:,} of {zeroed['utterances']:,} training utterances "
                       f"({zeroed['share']:.2%}) got loss 0 and no gradient: no path through "
                       f"the pruned band, or a loss of 1e4 or more (worst window: step "
                       f"{zeroed['worst_step']}).")
        if len(evals):
            st.dataframe(evals, hide_index=True, width="stretch")
        log = data.stage_log(home, run_id, stage)
        if log:
            with st.expander("log (last lines)"):
                st.code("\n".join(log), language=None)
        failed = next(s for s in run["stages"] if s["name"] == stage).get("error")
        if failed:
            st.error(f"{stage}: {failed}")

    stage_view()

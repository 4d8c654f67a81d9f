"""Pure DataFrame -> plotly figure functions (no Streamlit here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.data import AXES

SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down",
           "pentagon", "hexagon"]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#17becf", "#7f7f7f", "#bcbd22"]


def pareto(models: pd.DataFrame, x: str, split: str, log_x: bool = True,
           selected: list[str] | None = None) -> go.Figure:
    """One trace per method (colour), a symbol per run, WER intervals as error bars, the front as
    a step line; each point carries its model id in ``customdata`` for selection."""
    fig = go.Figure()
    runs = {r: i for i, r in enumerate(dict.fromkeys(models["run_id"]))}
    labelled = len(models) <= 25  # few models: name each point on the chart
    for i, (method, g) in enumerate(models.groupby("method", sort=True)):
        fig.add_trace(go.Scatter(
            x=g[x], y=g["wer"], mode="markers+text" if labelled else "markers", name=method,
            text=[f"{n}#{r.rsplit('-', 1)[-1]} · {m}" for n, r, m in
                  zip(g["run_name"], g["run_id"], g["model_stage"])] if labelled else None,
            textposition="top right", textfont=dict(size=11, color="#555"),
            marker=dict(size=11, color=COLORS[i % len(COLORS)],
                        symbol=[SYMBOLS[runs[r] % len(SYMBOLS)] for r in g["run_id"]],
                        line=dict(width=1, color="#333")),
            error_y=dict(type="data", symmetric=False, array=g["wer_hi"] - g["wer"],
                         arrayminus=g["wer"] - g["wer_lo"], thickness=1, width=3),
            customdata=np.stack([g["model"], g["run_name"], g["model_stage"],
                                 g["step"].astype(str)], axis=-1),
            hovertemplate=("<b>%{customdata[1]}</b> / %{customdata[2]} @ step %{customdata[3]}"
                           f"<br>WER %{{y:.2f}}%<br>{AXES[x]} %{{x:,.0f}}<extra>{method}</extra>")))
    front = models[models["on_front"]].sort_values(x)
    if len(front):
        fig.add_trace(go.Scatter(x=front[x], y=front["wer"], mode="lines", name="Pareto front",
                                 line=dict(color="#444", dash="dot", shape="hv"),
                                 hoverinfo="skip"))
    if selected:
        sel = models[models["model"].isin(selected)]
        fig.add_trace(go.Scatter(x=sel[x], y=sel["wer"], mode="markers", name="selected",
                                 marker=dict(size=20, color="rgba(0,0,0,0)",
                                             line=dict(width=2.5, color="#000")),
                                 hoverinfo="skip"))
    fig.update_layout(
        xaxis_title=AXES[x], yaxis_title=f"WER on {split} (%), 95% interval",
        xaxis_type="log" if log_x else "linear", xaxis_tickformat="~s", height=480, margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", y=1.08))
    return fig


def training_curves(curve: pd.DataFrame, evals: pd.DataFrame) -> go.Figure:
    """Loss (per token) against step, and the WER of every evaluation of the stage's weights on a
    second axis."""
    fig = go.Figure()
    for col, name in (("loss", "loss"), ("rnnt", "transducer loss"), ("ctc", "CTC loss"),
                      ("kd", "KD (output)"), ("layer", "KD (layerwise)")):
        if col in curve and curve[col].notna().any() and (curve[col] != 0).any():
            fig.add_trace(go.Scatter(x=curve["step"], y=curve[col], mode="lines", name=name))
    for split, g in evals.groupby("split") if len(evals) else []:
        fig.add_trace(go.Scatter(
            x=g["step"], y=g["wer"], mode="lines+markers", name=f"WER {split}", yaxis="y2",
            error_y=dict(type="data", symmetric=False, array=g["wer_hi"] - g["wer"],
                         arrayminus=g["wer"] - g["wer_lo"])))
    fig.update_layout(xaxis_title="step", yaxis_title="loss per token",
                      yaxis2=dict(title="WER (%)", overlaying="y", side="right", rangemode="tozero",
                                  tickformat=".0f", showgrid=False),
                      height=360, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.12))
    return fig


def utterance_deltas(rows: pd.DataFrame) -> go.Figure:
    """Histogram of the change in errors per utterance (model B minus model A)."""
    fig = go.Figure(go.Histogram(x=rows["delta"], marker_color="#1f77b4"))
    fig.update_layout(xaxis_title="errors of B minus errors of A, per utterance",
                      yaxis_title="utterances", height=260, margin=dict(l=10, r=10, t=10, b=10))
    return fig

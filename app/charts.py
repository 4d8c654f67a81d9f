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


# ----- masks --------------------------------------------------------------------------------------
MODULE_ORDER = ["ffn1", "attn", "conv", "ffn2"]
UNIT_TITLES = {"ffn1": "FFN 1 hidden units", "attn": "attention heads", "conv": "conv channels",
               "ffn2": "FFN 2 hidden units"}
KEPT_SCALE = [[0.0, "#eeeeee"], [0.0001, "#c6dbef"], [1.0, "#08306b"]]


def kept_by_block(masks: pd.DataFrame, title: str = "") -> go.Figure:
    """Kept share of each encoder block's prunable parameters (bars), and of each module's units
    (markers) — the block that lost most is the shortest bar."""
    fig = go.Figure()
    blocks = masks[(masks["module"] == "block") & (masks["block"] >= 0)].sort_values("block")
    fig.add_trace(go.Bar(x=[f"block {b}" for b in blocks["block"]], y=blocks["kept_fraction"],
                         name="parameters kept", marker_color="#9ecae1",
                         text=[f"{v:.0%}" for v in blocks["kept_fraction"]], textposition="outside",
                         hovertemplate="%{x}: %{y:.1%} of its prunable parameters kept<extra></extra>"))
    units = masks[masks["unit"].isin(["units", "heads", "channels"])]
    for i, mod in enumerate(MODULE_ORDER):
        g = units[units["module"] == mod].sort_values("block")
        if len(g):
            fig.add_trace(go.Scatter(x=[f"block {b}" for b in g["block"]], y=g["kept_fraction"],
                                     mode="markers", name=UNIT_TITLES[mod],
                                     marker=dict(size=11, color=COLORS[i], symbol=SYMBOLS[i]),
                                     hovertemplate="%{x}: %{y:.1%} kept<extra>" + UNIT_TITLES[mod]
                                     + "</extra>"))
    fig.update_layout(title=title or None, yaxis=dict(title="kept", tickformat=".0%",
                                                      range=[0, 1.12]),
                      height=320, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      legend=dict(orientation="h", y=-0.2), bargap=0.35)
    return fig


def unit_heatmaps(masks: pd.DataFrame, colour: str = "kept", ranked: bool = True) -> go.Figure:
    """Structured masks: one heatmap per module kind, a row per block, a cell per unit (head,
    FFN unit, conv channel); colour = kept (blue) / pruned (grey), or the gate probability.
    ``ranked`` orders each row's units by gate probability, so the kept share reads as a bar."""
    from plotly.subplots import make_subplots

    units = masks[masks["unit"].isin(["units", "heads", "channels"])]
    mods = [m for m in MODULE_ORDER if (units["module"] == m).any()]
    if not mods:
        return go.Figure()
    widths = [max(max(len(k) for k in units[units["module"] == m]["kept"] if k) ** 0.5, 2)
              for m in mods]
    fig = make_subplots(rows=1, cols=len(mods), subplot_titles=[UNIT_TITLES[m] for m in mods],
                        column_widths=widths, horizontal_spacing=0.04, shared_yaxes=True)
    n_blocks = int(masks["block"].max()) + 1 if len(masks) else 0
    for c, mod in enumerate(mods, start=1):
        g = units[units["module"] == mod].set_index("block")
        width = max(len(k) for k in g["kept"] if k)
        z, hover = [], []
        for b in range(n_blocks):
            if b not in g.index:
                z.append([None] * width)
                hover.append(["absent"] * width)
                continue
            r = g.loc[b]
            kept = list(r["kept"] or [0] * int(r["size"]))
            prob = list(r["prob"]) if r["prob"] is not None else [0.0] * len(kept)
            order = sorted(range(len(kept)), key=lambda i: (-kept[i], -prob[i])) if ranked \
                else list(range(len(kept)))
            vals = [(prob[i] if colour == "prob" else float(kept[i])) for i in order]
            z.append(vals + [None] * (width - len(vals)))
            hover.append([f"unit {i}: {'kept' if kept[i] else 'pruned'}, P(open) {prob[i]:.2f}"
                          for i in order] + [""] * (width - len(vals)))
        fig.add_trace(go.Heatmap(z=z, text=hover, hovertemplate="block %{y}: %{text}<extra></extra>",
                                 colorscale=KEPT_SCALE if colour == "kept" else "Blues",
                                 zmin=0, zmax=1, showscale=c == len(mods) and colour == "prob",
                                 xgap=1 if width <= 16 else 0, ygap=2),
                      row=1, col=c)
    fig.update_yaxes(autorange="reversed", tickvals=list(range(n_blocks)),
                     ticktext=[f"block {b}" for b in range(n_blocks)], col=1)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=90 + 42 * n_blocks, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def tensor_heatmap(masks: pd.DataFrame) -> go.Figure:
    """Unstructured masks: kept share of every pruned weight tensor, a row per block (the
    predictor and joiner as a last row)."""
    w = masks[masks["unit"] == "weights"].copy()
    w["row"] = [f"block {b}" if b >= 0 else m.split(".")[0] for b, m in zip(w["block"], w["module"])]
    w["col"] = [m if b >= 0 else ".".join(m.split(".")[1:]) for b, m in zip(w["block"], w["module"])]
    rows = list(dict.fromkeys(w.sort_values("block", key=lambda s: s.where(s >= 0, 10**6))["row"]))
    cols = list(dict.fromkeys(w["col"]))
    grid = w.pivot_table(index="row", columns="col", values="kept_fraction").reindex(index=rows,
                                                                                     columns=cols)
    fig = go.Figure(go.Heatmap(z=grid.values, x=cols, y=rows, colorscale="Blues", zmin=0, zmax=1,
                               text=[[f"{v:.0%}" if v == v else "" for v in r] for r in grid.values],
                               texttemplate="%{text}", colorbar=dict(title="kept")))
    fig.update_layout(height=120 + 32 * len(rows), margin=dict(l=10, r=10, t=10, b=10),
                      yaxis=dict(autorange="reversed"))
    return fig


def mask_history(hist: pd.DataFrame) -> go.Figure:
    """How the masks formed: the kept share of each block's parameters against the step."""
    fig = go.Figure()
    for i, (b, g) in enumerate(hist.groupby("block")):
        name = f"block {b}" if b >= 0 else "outside the encoder"
        fig.add_trace(go.Scatter(x=g["step"], y=g["kept_fraction"], mode="lines+markers",
                                 name=name, line=dict(color=COLORS[i % len(COLORS)])))
    fig.update_layout(xaxis_title="step", yaxis=dict(title="parameters kept", tickformat=".0%",
                                                     rangemode="tozero"),
                      height=300, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", y=1.15))
    return fig


def head_deaths(deaths: pd.DataFrame) -> go.Figure:
    """Which heads died first: the step from which each head stayed pruned (blank: alive)."""
    blocks = sorted(set(deaths["block"]))
    heads = int(deaths["head"].max()) + 1 if len(deaths) else 0
    z = [[None] * heads for _ in blocks]
    text = [[""] * heads for _ in blocks]
    for r in deaths.itertuples():
        i = blocks.index(r.block)
        died = None if r.died_at is None or r.died_at != r.died_at else int(r.died_at)
        z[i][r.head] = died
        text[i][r.head] = f"{died}" if died is not None else "alive"
    fig = go.Figure(go.Heatmap(z=z, x=[f"head {h}" for h in range(heads)],
                               y=[f"block {b}" for b in blocks], text=text, texttemplate="%{text}",
                               colorscale="Reds_r", colorbar=dict(title="died at step"),
                               hovertemplate="%{y}, %{x}: %{text}<extra></extra>", xgap=2, ygap=2))
    fig.update_layout(height=100 + 36 * len(blocks), margin=dict(l=10, r=10, t=10, b=10),
                      yaxis=dict(autorange="reversed"))
    return fig

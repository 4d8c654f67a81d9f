"""The non-dominated front of (size, WER) and the mapping from a chart selection to model ids.

Pure functions over DataFrames, tested directly (AppTest cannot simulate a plotly selection).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def front_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where a point is on the lower-left front: no other point is at most as large in x
    and in y and smaller in one of them. One sort, O(N log N) (the optuna-dashboard method)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    mask = np.zeros(len(x), dtype=bool)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((y[idx], x[idx]))]  # by x, ties by y
    xs, ys = x[order], y[order]
    before = np.concatenate([[np.inf], np.minimum.accumulate(ys)[:-1]])
    on = ys < before  # better than every point at most as large
    same = np.concatenate([[False], (xs[1:] == xs[:-1]) & (ys[1:] == ys[:-1])])
    for i in np.flatnonzero(same):  # an exact twin of a front point is not dominated either
        on[i] = on[i - 1]
    mask[order[on]] = True
    return mask


def with_front(models: pd.DataFrame, x: str, y: str = "wer") -> pd.DataFrame:
    """``models`` with an ``on_front`` column."""
    out = models.copy()
    out["on_front"] = front_mask(out[x].to_numpy(dtype=float, na_value=np.nan),
                                 out[y].to_numpy(dtype=float, na_value=np.nan)) if len(out) else []
    return out


def selected_models(selection) -> list[str]:
    """Model ids of the points selected in a plotly chart (``st.plotly_chart(...,
    on_select="rerun")``), read from each point's ``customdata`` (never from point indices,
    which change with the traces), in selection order without repeats."""
    if not selection:
        return []
    points = (selection.get("selection") or {}).get("points") or selection.get("points") or []
    out: list[str] = []
    for p in points:
        cd = p.get("customdata")
        key = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
        if isinstance(key, str) and key not in out:
            out.append(key)
    return out

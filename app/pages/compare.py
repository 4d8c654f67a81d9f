"""Compare: two models on the same utterances: WER difference with its paired-bootstrap
interval, the utterances where they differ most, word-level diffs."""

import streamlit as st

from app import charts, data, text, ui

st.title("Compare two models")
home = ui.home()

split, ev, labels = ui.evaluated_on_a_split(home)
keys = list(labels)
c = st.columns(2)
by_wer = list(dict.fromkeys(ev.sort_values("wer")["model"]))
ui.seed("a", keys, ui.param("a"), by_wer[0])  # by default the best two models on this split
ui.seed("b", keys, ui.param("b"), by_wer[min(1, len(by_wer) - 1)])
a = c[0].selectbox("Model A (reference point)", keys, format_func=labels.get, key="a")
b = c[1].selectbox("Model B", keys, format_func=labels.get, key="b")
ui.set_params(split=split, a=a, b=b)
if a == b:
    st.info("Choose two different models.")
    st.stop()

res = data.compare(home, a, b, split)
if res.get("corpora"):
    ca, cb = res["corpora"]
    st.error(f"A was scored on {ca} and B on {cb}: different utterances under the same ids, so "
             f"they cannot be paired. Choose two models scored on one corpus.")
    st.stop()
if not res["utterances"]:
    st.warning(f"The two models share no utterances on {split}.")
    st.stop()

m = st.columns(4)
m[0].metric("WER A", f"{res['wer_a']:.2f}%")
m[1].metric("WER B", f"{res['wer_b']:.2f}%", f"{res['delta']:+.2f} pts", delta_color="inverse")
lo, hi = res["ci"]
m[2].metric("B − A, 95% paired-bootstrap interval", f"[{lo:+.2f}, {hi:+.2f}]")
m[3].metric("share of resamples where B is better", f"{res['p_b_better']:.1%}")
verdict = ("B is better" if hi < 0 else "B is worse" if lo > 0 else
           "no significant difference") + f" on {res['utterances']} shared utterances"
st.markdown(f"**{verdict}.**")

rows = res["rows"]
st.plotly_chart(charts.utterance_deltas(rows), key="deltas")
only = st.checkbox("only utterances where the two differ", value=True, key="only")
shown = rows[rows["delta"] != 0] if only else rows
st.caption("Sorted by how much the error counts differ; click a column header to sort by it, "
           "select a row to see its word-level diffs.")
table = shown[["cut_id", "delta", "errors_a", "errors_b", "ref_words", "reference", "hyp_a",
               "hyp_b"]]
event = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun",
                     selection_mode="single-row", key="utts", column_config={
                         "delta": st.column_config.NumberColumn("Δ errors (B − A)")})
picked = event.selection.rows if event and event.selection else []
cut_ids = list(table["cut_id"])
cut = cut_ids[picked[0]] if picked else (ui.param("utt") if ui.param("utt") in cut_ids
                                         else (cut_ids[0] if cut_ids else None))
if cut:
    ui.set_params(utt=cut)
    r = rows[rows["cut_id"] == cut].iloc[0]
    with st.container(border=True):
        st.markdown(f"**{cut}** — reference: {r.reference}")
        st.markdown(f"A ({r.errors_a} errors): " + text.diff_html(r.reference, r.hyp_a),
                    unsafe_allow_html=True)
        st.markdown(f"B ({r.errors_b} errors): " + text.diff_html(r.reference, r.hyp_b),
                    unsafe_allow_html=True)
        st.page_link("app/pages/listen.py", label="listen to it", icon=":material/headphones:",
                     query_params={"models": [a, b], "split": split, "utt": cut})

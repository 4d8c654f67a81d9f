"""Listen: find an utterance, play it at its real level, read every selected model's
hypothesis against the reference with the errors marked."""

import streamlit as st

from app import audio, data, text, ui

st.title("Listen")
home = ui.home()

split, ev, labels = ui.evaluated_on_a_split(home)
best = list(ev.sort_values("wer")["model"][:1])  # by default, the best model on this split
ui.seed_many("models", list(labels), ui.param_list("models") or best)
keys = st.multiselect("Models (the first one's errors order the list)", list(labels),
                      format_func=labels.get, key="models")
c = st.columns([3, 1])
st.session_state.setdefault("q", ui.param("q", ""))
search = c[0].text_input("Search the reference text or utterance id", key="q")
ui.seed("sort", ["errors", "id"], ui.param("sort"))
sort = c[1].selectbox("Order", ["errors", "id"], key="sort",
                      format_func={"errors": "most errors first", "id": "by id"}.get)
ui.set_params(split=split, models=keys, q=search, sort=sort)
if not keys:
    st.info("Choose at least one model.")
    st.stop()

utts = data.utterances(home, keys, split, search, sort=sort)
if utts.empty:
    st.warning("No utterance matches." if search else "This model has no utterances here.")
    st.stop()
st.caption(f"showing {len(utts)} utterance(s) (at most 200); select a row to play it")
event = st.dataframe(utts[["cut_id", "errors", "ref_words", "reference", "hypothesis",
                           "duration"]], hide_index=True, width="stretch", on_select="rerun",
                     selection_mode="single-row", key="utt_table", height=280)
ids = list(utts["cut_id"])
rows = event.selection.rows if event and event.selection else []
cut = ids[rows[0]] if rows else (ui.param("utt") if ui.param("utt") in ids else ids[0])
ui.set_params(utt=cut)

u = utts[utts["cut_id"] == cut].iloc[0]
with st.container(border=True):
    st.markdown(f"#### {cut}")
    try:
        st.audio(audio.wav_bytes(u["audio"], u["start"], u["duration"]), format="audio/wav")
    except audio.AudioMissing as e:
        st.warning(str(e))
    st.markdown(f"**reference** ({u['ref_words']} words): {u['reference']}")
    for h in data.hypotheses_of(home, keys, split, cut):
        st.markdown(f"**{labels.get(h['model'], h['model'])}** — {h['errors']} error(s): "
                    + text.diff_html(h["reference"], h["hypothesis"]), unsafe_allow_html=True)
        if h.get("nbest"):
            nb = h["nbest"]
            first = nb["list"][0]["text"] if nb["list"] else ""
            with st.expander(f"two-pass: the {len(nb['list'])}-best the LAS rescored "
                             f"(chose #{nb['chosen'] + 1}; first pass alone: \"{first}\")"):
                st.dataframe(data.nbest_table(nb), hide_index=True, width="stretch",
                             key=f"nbest-{h['model']}")

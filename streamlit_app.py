"""ASR Compression Lab explorer: `asrlab ui` (or `streamlit run streamlit_app.py`)."""

import streamlit as st

st.set_page_config(page_title="ASR Compression Lab", page_icon=":material/graphic_eq:",
                   layout="wide")

PAGES = [
    st.Page("app/pages/runs.py", title="Runs", icon=":material/monitoring:", url_path="runs",
            default=True),
    st.Page("app/pages/launch.py", title="Launch", icon=":material/rocket_launch:",
            url_path="launch"),
    st.Page("app/pages/pareto.py", title="Pareto", icon=":material/scatter_plot:",
            url_path="pareto"),
    st.Page("app/pages/compare.py", title="Compare", icon=":material/compare_arrows:",
            url_path="compare"),
    st.Page("app/pages/listen.py", title="Listen", icon=":material/headphones:",
            url_path="listen"),
    st.Page("app/pages/masks.py", title="Masks", icon=":material/grid_on:", url_path="masks"),
]
st.navigation(PAGES).run()

"""LFSSD Explorer — entry point: page config, the shared sidebar, navigation between pages.

The default view (digits, forget class 3, α = 3.5) trains its small model on first run in
seconds, caches it on disk, and tells the story before anyone touches a control.
"""
import streamlit as st

from ui import widgets

st.set_page_config(page_title="LFSSD Explorer", page_icon="🧠", layout="wide")
navigation = st.navigation([
    st.Page("pages/forget.py", title="Forget", default=True),
    st.Page("pages/overview.py", title="Overview"),
])
widgets.sidebar()
navigation.run()

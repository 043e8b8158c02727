"""LFSSD Explorer — entry point: page config, the shared sidebar, navigation between pages.

The default view (digits, forget class 3, α = 3.5) trains its small model on first run in
seconds, caches it on disk, and tells the story before anyone touches a control.

Page scripts live in ``views/``, not ``pages/``: a ``pages/`` folder beside the entry script puts
Streamlit into its legacy multipage mode for direct links on a fresh server and in AppTest, which
then run a page without this entry script (no sidebar, no navigation).
"""
import streamlit as st

from core.fast.runtime import configure_threads
from ui import lesson, widgets

configure_threads()  # one torch thread per core beyond the first: spinning threads starve a small machine

st.set_page_config(page_title="LFSSD Explorer", layout="wide")
# Less empty space above each page's title (Streamlit's default is 6rem), so the Forget page's
# cards, sliders and the charts they drive fit one 1280×800 screen; a style-only st.html takes no room.
st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 3.2rem; }</style>")
# No page icons: Streamlit fetches ":material/…" icons from an outside font server (a classroom may
# have no internet: the app makes no request beyond its own server), and emoji need an emoji font.
present = lesson.presenting()  # the lesson on a projector: no sidebar, no chrome, larger type
navigation = st.navigation([
    st.Page("views/overview.py", title="Lesson", default=True),
    st.Page("views/model_data.py", title="Model & data"),
    st.Page("views/forget.py", title="Forget"),
    st.Page("views/sensitivity.py", title="Sensitivity"),
    st.Page("views/importance.py", title="Importance maps"),
    st.Page("views/evidence.py", title="Evidence"),
    st.Page("views/compare.py", title="Compare methods"),
], position="hidden" if present else "sidebar")
extra = None  # the page's own URL parameters, written with the selection in every write of a run
if navigation.url_path in ("", "overview"):  # the lesson reads its step from the URL before the sidebar rewrites it
    extra = lesson.url_extra(lesson.current_step())
if present:
    st.html(lesson.PRESENTER_CSS)
    widgets.selection_without_sidebar(extra)
else:
    widgets.sidebar(extra)
navigation.run()

"""The only Streamlit code besides app.py and the page scripts: state, cached compute, widgets."""

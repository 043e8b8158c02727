"""Plotly figures built from the engine's results; the app shows them, tests inspect them."""

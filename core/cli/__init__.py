"""The command line and the bench: they drive the engine, the engine never imports them."""

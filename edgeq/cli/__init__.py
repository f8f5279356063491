"""edgeq's command line: thin click commands over the public API (see ``main.py``)."""

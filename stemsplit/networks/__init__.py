"""The separation networks, one module per family, and the layers they share (layers.py)."""

"""The separation networks, one module per family."""

"""Models promoted from the notebooks, one per file (each names the notebook that introduces it)."""

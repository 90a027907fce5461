"""Helpers for the course 'Generative AI, from first principles to the frontier'.

Import what you need explicitly, e.g. `from utils.runtime import choose, get_device`.
Nothing happens at import time.
"""

__version__ = "0.1.0"

"""The benchmarks of ``streamrec bench``: ``pipeline`` (end to end), ``freshness`` (one worker at
rising rates) and ``scale`` (1, 2, 4 ... workers). Each imports only the standard library at
import time, so that the CLI builds its parser cheaply.
"""

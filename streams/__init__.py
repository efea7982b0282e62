"""streamrec's service layer: the Faust app, the Redis cache, the clients and the command line.

The learning math lives in the sibling package :mod:`models` (numpy only).
"""

__version__ = "0.1.0"

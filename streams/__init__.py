"""streamrec's service layer around the learning math: the settings, the event contract and the
client here; the worker (:mod:`streams.worker`), its durable state (:mod:`streams.state`), the
connections to Kafka and Redis (:mod:`streams.io`) and the command line with its tools
(:mod:`streams.tools`) in subpackages (README.md, Architecture).

The learning math lives in the sibling package :mod:`models` (numpy only).
"""

__version__ = "0.1.0"

"""Everything around the worker that people run: the ``streamrec`` command, the embedded dev
services, the demo, the metrics view, ``streamrec eval``, synthetic traffic, worker child
processes and the end-to-end benchmarks (:mod:`streams.tools.bench`).

Nothing in :mod:`streams.worker` imports from here.
"""

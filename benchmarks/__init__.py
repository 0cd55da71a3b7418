"""burr_async's benchmark harness: the per-step write path against the raw drivers, SQLAlchemy
Core, Apache Burr and LangGraph, on SQLite and Postgres.

``python -m benchmarks`` (``make bench``) runs every workload on both backends; ``--quick``
(``make bench-quick``) is a smoke run with tiny sizes, burr_async and the raw drivers only. See
``python -m benchmarks --help`` and ``docs/performance.md``.

Layout:

- :mod:`benchmarks.chat`: the chat-like state every contender writes (same shape and size);
- :mod:`benchmarks.workloads`: W0-W5, their sizes and metrics;
- :mod:`benchmarks.targets`: where the benchmark runs (SQLite files, a Postgres schema);
- :mod:`benchmarks.contenders`: one module per contender, imported lazily;
- :mod:`benchmarks.runner`: rounds, interleaving, medians;
- :mod:`benchmarks.report`: tables, ratios, targets, ``docs/performance.md``;
- :mod:`benchmarks.profiling`: the ``--profile`` hook (pyinstrument).
"""

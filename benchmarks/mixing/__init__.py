"""Mixing diagnostics with known right answers (issue 15): ``python -m benchmarks.mixing run --all``.

Synthetic domains (Markov chains over a small shared vocabulary, uniform noise) and the packaged
real-text corpus are written once as mixstream shards; a micro language model is trained with
every mixing method over paired seeds; tables and plots go to ``benchmarks/results/mixing/``.
See ``benchmarks/mixing/README.md``.
"""

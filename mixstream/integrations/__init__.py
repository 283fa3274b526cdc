"""Trainer integrations: a MixLoader (and the controllers attached to its stream) inside
Hugging Face ``Trainer`` (:mod:`mixstream.integrations.hf`, ``pip install "mixstream[hf]"``)
and Lightning (:mod:`mixstream.integrations.lightning`, ``pip install "mixstream[lightning]"``).

Each submodule imports its trainer; this package imports neither. docs/trainers.md shows the
lines a user writes and what is saved where.
"""

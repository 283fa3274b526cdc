"""Unit layer: one test module per engine module, fast (the whole layer runs in seconds)."""

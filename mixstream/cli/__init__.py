"""Command-line entry points: ``mixstream`` (plot, laws, demo) and ``mixstream-shard``."""

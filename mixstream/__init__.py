"""mixstream: mixture-aware streaming data loading for PyTorch."""

"""A tiny end-to-end demo: a ~2M-parameter GPT trained on the packaged sample corpus with the
uniform mixture and with an online controller (``mixstream demo``)."""

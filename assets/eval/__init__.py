"""Held-out evaluation sets of tandem-nano, written apart from the training generators."""

"""Evaluation metrics."""

from zoo.metrics.translation import corpus_scores

__all__ = ["corpus_scores"]

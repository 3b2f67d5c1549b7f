"""Evaluation metrics."""

from zoo.metrics.peptide import aa_match, aa_match_batch, aa_match_metrics, evaluate
from zoo.metrics.translation import corpus_scores

__all__ = ["aa_match", "aa_match_batch", "aa_match_metrics", "corpus_scores", "evaluate"]

"""Scoring counterfactuals: LPIPS, L1, counterfactual prediction gain, the soundness axioms, attribute classifiers.

Modules: :mod:`~cfaudit.models.lpips` (the perceptual distance), :mod:`~cfaudit.models.lpips_weights` (its
weights, fetched once), :mod:`~cfaudit.evaluate.metrics` (distances, CPG, axioms, bootstrap intervals),
and :mod:`~cfaudit.evaluate.classifiers` (loading a trained attribute classifier and predicting with it; the
networks are :mod:`cfaudit.models.classifier`, their training :mod:`cfaudit.train.classifier`).
"""

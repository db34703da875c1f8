"""Scoring counterfactuals: LPIPS, L1, counterfactual prediction gain, the soundness axioms, attribute classifiers.

Modules: :mod:`~cfaudit.evaluate.lpips` (the perceptual distance), :mod:`~cfaudit.evaluate.lpips_weights` (its
weights, fetched once), :mod:`~cfaudit.evaluate.metrics` (distances, CPG, axioms, bootstrap intervals),
:mod:`~cfaudit.evaluate.classifier_models` (the networks) and :mod:`~cfaudit.evaluate.classifiers` (training,
calibration, saving and loading the attribute classifiers).
"""

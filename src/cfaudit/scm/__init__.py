"""The SCM baseline: a causal graph with learned mechanisms and a conditional hierarchical VAE for the image.

Counterfactuals follow Pearl's three steps (abduction, action, prediction), as in Ribeiro et al. (2023),
"High fidelity image counterfactuals with probabilistic causal models". Modules, in the order data flows:
``graph`` (nodes, edges, encoding records), ``mechanisms`` (learned mechanisms of the metadata nodes),
``hvae`` (the image mechanism), ``model`` (the three saved together), ``train`` (the training loop),
``counterfactual`` (abduction -> do() -> prediction) and ``job`` (edits written in ``cfaudit edit``'s layout).
"""

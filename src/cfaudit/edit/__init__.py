"""Counterfactual editing: interventions -> prompts, inversion, prompt-to-prompt attention control, the batch job.

``interventions`` (do(A=v) -> source and target prompts), ``ddim`` (the step grid shared by sampling and
inversion), ``denoiser`` (the UNet, guidance and its cost), ``inversion`` (ddim / nti / npi / direct),
``tokens`` (words to tokens, token alignment), ``attention`` (prompt-to-prompt processors), ``editor`` (the
pipeline: invert once, edit many), ``difference`` (signed difference maps) and ``job`` (``cfaudit edit``).
"""

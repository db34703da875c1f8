"""Diffusion models: architecture presets, loading, the SD tokenizer, random pipelines and sampling;
the attribute classifier's networks (:mod:`~cfaudit.models.classifier`)."""

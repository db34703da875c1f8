"""Diffusion models: architecture presets, loading, the SD tokenizer, random pipelines and sampling."""

"""Data: records and their schema, data-set adapters, splits, prompts, images and the synthetic phantom."""

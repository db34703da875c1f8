"""cfaudit: counterfactual audits of chest X-ray data sets with fine-tuned text-to-image diffusion models."""

__version__ = "0.1.0"

"""Fine-tuning: the training loop, its config, checkpoints and the latent cache; training the attribute classifiers."""

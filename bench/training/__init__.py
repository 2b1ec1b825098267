"""Training: one LightningModule for every neural model, losses, and `bench run`."""

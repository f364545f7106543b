"""Encoders, similarity heads, losses and the LightningModule that composes them."""

"""Lightning and Hydra callbacks for experiment operations (RNG state, throughput, W&B extras, summaries)."""

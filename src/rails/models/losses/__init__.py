"""Training losses and negative samplers."""

from rails.models.losses.negatives import UniformNegatives
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss

__all__ = ["SampledSoftmaxLoss", "UniformNegatives"]

"""Training losses and negative samplers."""

from rails.models.losses.negatives import InBatchNegatives, NegativeSampler, SharedNegatives, UniformNegatives
from rails.models.losses.sampled_softmax import SampledSoftmaxLoss

__all__ = ["InBatchNegatives", "NegativeSampler", "SampledSoftmaxLoss", "SharedNegatives", "UniformNegatives"]

"""Sequence encoders: (B, N, D) history embeddings + SequenceHistory -> (B, N, D) per-position queries."""

from rails.models.encoders.base import SequenceEncoder, SequenceHistory
from rails.models.encoders.bsarec import BSARec
from rails.models.encoders.hstu import HSTU
from rails.models.encoders.sasrec import SASRec

__all__ = ["BSARec", "HSTU", "SASRec", "SequenceEncoder", "SequenceHistory"]

"""The LM lab: transformer language models as soft Q-functions on token-level MDPs.

One module per concern:
  * :mod:`~agents.lm.transformer` the transformer spec, network, decoder, key/value cache and a
    scalar (reward) head;
  * :mod:`~agents.lm.sampling` ancestral sampling through any model's decoder;
  * :mod:`~agents.lm.losses` per-token losses (MLE, IRL-SFT, chi^2 IQ-Learn, online IRL-SFT);
  * :mod:`~agents.lm.objectives` training methods as records in a registry;
  * :mod:`~agents.lm.trainer` the config, train state and the one training loop;
  * :mod:`~agents.lm.distill` distillation: token-level f-divergences, GKD and sequence-level KD;
  * :mod:`~agents.lm.weights` weight-space operations (average, EMA, interpolation);
  * :mod:`~agents.lm.evaluation` evaluation against an exact oracle; :mod:`~agents.lm.metrics`
    Self-BLEU, distinct-n and Spearman.
"""

from agents.lm import distill  # registers the distillation objectives
from agents.lm.objectives import OBJECTIVES, Batch, BatchContext, Objective, register
from agents.lm.sampling import Samples, sample
from agents.lm.trainer import LMConfig, Trainer, TrainOutput, TrainState, make_optimizer, make_train, make_trainer
from agents.lm.transformer import (
    Decoder,
    KVCache,
    LanguageModel,
    TransformerSpec,
    empty_cache,
    language_model,
    reward_model,
    shift_right,
)

__all__ = [
    "distill",
    "OBJECTIVES",
    "Batch",
    "BatchContext",
    "Decoder",
    "KVCache",
    "LMConfig",
    "LanguageModel",
    "Objective",
    "Samples",
    "TrainOutput",
    "TrainState",
    "Trainer",
    "TransformerSpec",
    "empty_cache",
    "language_model",
    "make_optimizer",
    "make_train",
    "make_trainer",
    "register",
    "reward_model",
    "sample",
    "shift_right",
]

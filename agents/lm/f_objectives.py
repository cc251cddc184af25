"""Fenchel-Young f-loss objectives for the LM trainer (Roulet et al. 2025, arXiv 2501.18537, Sec. 4).

Each :class:`FLoss` is one divergence with a constant reference measure (the unit reference,
``log ref = 0``, or the uniform one, ``log ref = -log A``); :func:`register_f_loss` adds it to
the trainer's :data:`agents.lm.objectives.OBJECTIVES` as ``"fy:<divergence>:<reference>"``
(e.g. ``"fy:alpha:1.5:unit"``). The model such a loss trains is the f-softargmax of its logits
(:meth:`FLoss.log_policy`), which is what evaluation and sampling must use.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from agents.lm import losses, objectives
from mdvi.divergences import Divergence, get_divergence
from mdvi.fenchel_young import fenchel_young_loss

Array = jax.Array

REFERENCES = ("unit", "uniform")


@dataclasses.dataclass(frozen=True)
class FLoss:
    """A divergence (registered name) and a constant reference (``"unit"`` or ``"uniform"``)."""

    divergence: str
    reference: str = "unit"

    def __post_init__(self):
        get_divergence(self.divergence)
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")

    @property
    def name(self) -> str:
        return f"fy:{self.divergence}:{self.reference}"

    @property
    def resolved(self) -> Divergence:
        return get_divergence(self.divergence)

    def log_reference(self, num_actions: int) -> float:
        return 0.0 if self.reference == "unit" else -math.log(num_actions)

    def log_ref(self, logits: Array) -> Array:
        return jnp.full_like(logits, self.log_reference(logits.shape[-1]))

    def log_policy(self, logits: Array, temperature=1.0) -> Array:
        """The model's next-token distribution: ``log f-softargmax(logits / temperature)``."""
        return self.resolved.greedy_log_policy(logits, temperature, self.log_ref(logits))

    def loss(self, params, model, batch, extra, hyper):
        """Masked per-token mean of the Fenchel-Young loss of the next tokens."""
        logits = model.logits(params, batch.tokens)
        per_token = fenchel_young_loss(logits, batch.tokens, self.resolved, log_ref=self.log_ref(logits), mask=batch.mask)
        value = losses.masked_mean(per_token, batch.mask)
        return value, {"fy_loss": value}


def register_f_loss(divergence: str, reference: str = "unit") -> FLoss:
    """Register ``FLoss(divergence, reference)`` as a trainer objective (idempotent)."""
    f_loss = FLoss(divergence, reference)
    if f_loss.name not in objectives.OBJECTIVES:
        objectives.register(
            objectives.Objective(
                f_loss.name,
                f_loss.loss,
                description=f"Fenchel-Young loss of {f_loss.resolved.name} with the {reference} reference",
            )
        )
    return f_loss


def parse_f_loss(name: str) -> FLoss:
    """``"fy:<divergence>:<reference>"`` -> :class:`FLoss` (registered); ``ValueError`` otherwise."""
    if not isinstance(name, str) or not name.startswith("fy:") or name.count(":") < 2:
        raise ValueError(f"an f-loss name is 'fy:<divergence>:<unit|uniform>', got {name!r}")
    divergence, reference = name[3:].rsplit(":", 1)
    return register_f_loss(divergence, reference)

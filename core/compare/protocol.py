"""How a comparison is scored: the app's protocol and the paper's (its reference code's choices).

- ``app`` (default): sample-weighted accuracies; importance mode, order of D and batch size as
  the user chose them.
- ``paper``: batch-mode importance over D sorted by class with D_f last, batch size 64 (class,
  sub-class) or 128 (random samples), accuracy as the mean of per-batch accuracies at that batch
  size, D_r/D_f scored on the test split (random samples: D_r on the whole test set, D_f on the
  forgotten train images), MIA fit on retain-train vs test.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from core.errors import UserError
from core.registry import Registry


# --- protocols -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    batch_mean: bool  # accuracies as the mean of per-batch accuracies (the reference's)


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.register("app", Protocol(
    "app", "sample-weighted accuracies; importance mode, order of D and batch size as chosen", False))
PROTOCOLS.register("paper", Protocol(
    "paper", "the reference code's choices: batch-mode importance over D sorted by class with D_f last, "
             "batch size 64 (128 for random samples), batch-mean accuracy, D_r/D_f on the test split "
             "(random samples: D_f on the forgotten train images), MIA fit on retain-train vs test", True))


def protocol_config(config, protocol: str = "paper"):
    """``config`` (an ``ExperimentConfig``) with the protocol's importance settings applied."""
    if not PROTOCOLS.get(protocol).batch_mean:
        return config
    return replace(config, mode="batch", d_order="reference", batch_size=None)


def eval_batch_mean(prepared, protocol: str) -> int | None:
    """The batch size accuracies are averaged over under ``protocol`` (None: sample-weighted).

    Raises ``UserError`` when ``prepared`` was not prepared the way the protocol needs.
    """
    if not PROTOCOLS.get(protocol).batch_mean:
        return None
    config, reference = prepared.config, prepared.split.reference_batch_size
    if config.mode != "batch" or config.d_order != "reference" or config.batch_size not in (None, reference):
        raise UserError(
            f"the paper protocol needs batch-mode importance over D in the reference order with batch size "
            f"{reference}; this experiment has mode={config.mode}, order={config.d_order}, "
            f"batch size={config.batch_size or reference} (prepare it with core.compare.protocol.protocol_config)")
    return reference

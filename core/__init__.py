"""LFSSD Explorer's engine: Loss-Free Selective Synaptic Dampening (and SSD) on real data.

Public API::

    from core import load_dataset, create_model, load_checkpoint, compute_importance, dampen, evaluate, mia

``core`` never imports Streamlit; the CLI (``python -m core``) and the app use the same calls.
"""
from core.method.dampening import dampen
from core.data.registry import load_dataset
from core.errors import UserError
from core.evaluation.accuracy import evaluate
from core.method.importance import compute_importance
from core.evaluation.attacks import mia, mia_from_probs
from core.models.registry import create_model, load_checkpoint

__all__ = ["load_dataset", "create_model", "load_checkpoint", "compute_importance", "dampen", "evaluate",
           "mia", "mia_from_probs", "UserError"]

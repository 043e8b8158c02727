"""LFSSD Explorer's engine: Loss-Free Selective Synaptic Dampening (and SSD) on real data.

Public API::

    from core import load_dataset, create_model, load_checkpoint, compute_importance, dampen, evaluate, mia

``core`` never imports Streamlit; the CLI (``python -m core``) and the app use the same calls.
"""
from core.dampening import dampen
from core.data import load_dataset
from core.errors import UserError
from core.evaluate import evaluate
from core.importance import compute_importance
from core.mia import mia, mia_from_probs
from core.models import create_model, load_checkpoint

__all__ = ["load_dataset", "create_model", "load_checkpoint", "compute_importance", "dampen", "evaluate",
           "mia", "mia_from_probs", "UserError"]

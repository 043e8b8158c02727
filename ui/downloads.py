"""Download buttons: the JSON report of a forgetting run and the dampened model (safetensors)."""
from __future__ import annotations

import json

import streamlit as st
from safetensors.torch import save as safetensors_bytes

from core.evaluation.accuracy import EvalResult
from core.experiment import ForgetOutcome, Prepared


def report_json(prep: Prepared, outcome: ForgetOutcome, retrain: EvalResult | None, choice=None) -> str:
    """``choice``: the α rule's ``AlphaChoice`` when a rule set α and λ (named, with its reason,
    the curve it read and its diagnostics, as the CLI's ``alpha_rule``)."""
    cfg = prep.config
    return json.dumps({
        "dataset": cfg.dataset, "model": cfg.model, "recipe": cfg.recipe, "target": prep.split.description,
        "method": cfg.kind, "mode": cfg.mode, "alpha": outcome.report.alpha, "lambda": outcome.report.lambda_,
        "alpha_rule": choice.as_dict() if choice is not None else None,
        "baseline": prep.baseline.headline(), "forgotten": outcome.result.headline(),
        "retrained": retrain.headline() if retrain else None,
        "selected": outcome.report.selected, "parameters": outcome.report.numel, "layers": outcome.report.to_rows(),
    }, indent=2, default=lambda v: None)


def report_and_model(prep: Prepared, outcome: ForgetOutcome, retrain: EvalResult | None, choice=None) -> None:
    left, right = st.columns(2)
    stem = f"lfssd_{prep.config.dataset}_a{outcome.report.alpha:g}_l{outcome.report.lambda_:g}"
    left.download_button("Download the report (JSON)", report_json(prep, outcome, retrain, choice), f"{stem}.json",
                         mime="application/json", key="dl_report", on_click="ignore")
    # Serialised only when clicked (a ResNet18 is ~45 MB): slider moves do not pay for it.
    right.download_button("Download the dampened model (safetensors)", lambda: model_bytes(outcome.model),
                          f"{stem}.safetensors", mime="application/octet-stream", key="dl_model", on_click="ignore")


def model_bytes(model) -> bytes:
    return safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})

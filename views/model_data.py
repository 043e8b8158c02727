"""Model & data: the data set and its samples, the baseline's scores per class, an uploaded checkpoint."""
import streamlit as st

from core.data.registry import DATASETS, load_dataset
from core.errors import UserError
from core.evaluation.report import (CHECKPOINT_TYPES, MAX_UPLOAD_MB, class_counts, confusion_figure,
                               load_uploaded_checkpoint, model_report, per_class_bars, sample_grid_figure)
from core.models.registry import MODELS, weights_hash
from ui import compute, state, widgets

selection = state.current()


def report(key: tuple, make):
    """A model's scores, kept in this session so reruns (any widget) do not re-run the model."""
    reports = st.session_state.setdefault("md_reports", {})
    if key not in reports:
        reports[key] = model_report(*make())
    return reports[key]


# --- the data set ---
try:
    dataset = load_dataset(selection.dataset)
except UserError as exc:
    widgets.show_user_error(exc)
    st.stop()
st.subheader(f"Data set: {DATASETS.get(selection.dataset).description}")
st.caption(dataset.description)
cols = st.columns(4)
cols[0].metric("train images", f"{len(dataset.train_y):,}")
cols[1].metric("test images", f"{len(dataset.test_y):,}")
cols[2].metric("image shape (C × H × W)", " × ".join(map(str, dataset.image_shape)))
cols[3].metric("classes", dataset.num_classes)
left, right = st.columns([3, 1])
with left:
    st.markdown("**Train images, the first 12 of each class** (enlarged pixel for pixel)")
    st.plotly_chart(sample_grid_figure(dataset, per_class=12), width="stretch", key="md_samples")
with right:
    st.markdown("**Images per class**")
    st.dataframe(class_counts(dataset), hide_index=True, width="stretch")

# --- the baseline model ---
st.divider()
upload_name = st.session_state[state.BASELINE_UPLOAD]["name"] if selection.checkpoint else None
st.subheader(f"Baseline model: {MODELS.get(selection.model).description}"
             + (f" — your checkpoint {upload_name}" if upload_name else ""))
try:
    prep = compute.prepared(selection)
except UserError as exc:
    widgets.show_user_error(exc, " (the baseline is prepared together with the sidebar's forget target)")
    st.stop()
base = report(("baseline", weights_hash(prep.model)), lambda: (prep.model, prep.dataset))
cols = st.columns(3)
cols[0].metric("train accuracy", f"{base.train:.1f} %")
cols[1].metric("test accuracy", f"{base.test:.1f} %")
if upload_name:
    cols[2].metric("weights", "uploaded", help="your checkpoint; the sidebar switches back to the trained baseline")
else:
    cols[2].metric("training", "cached" if prep.cache_hits.get("model") else f"{prep.timings.get('model', 0.0):.0f} s",
                   help="trained once on the train split, then loaded from the disk cache")
left, right = st.columns(2)
with left:
    st.markdown("**Test accuracy per class**")
    st.plotly_chart(per_class_bars(dataset.classes, baseline=base.per_class), width="stretch", key="md_per_class")
with right:
    st.markdown("**Confusion matrix on the test split** (counts; colour: share of the true class)")
    st.plotly_chart(confusion_figure(base.confusion, dataset.classes), width="stretch", key="md_confusion")

# --- an uploaded checkpoint ---
st.divider()
st.subheader("Your own checkpoint: compare it, then forget from it")
st.caption(f"Weights for **{selection.model}** on **{selection.dataset}**: a .safetensors file, or a .pt file "
           "written by `torch.save(model.state_dict(), …)` (read with `weights_only`; plain pickles are refused, "
           "never unpickled). `python -m core train --save model.safetensors` writes one.")
upload = st.file_uploader(f"Checkpoint (≤ {MAX_UPLOAD_MB} MB)", type=list(CHECKPOINT_TYPES), key="md_checkpoint",
                          max_upload_size=MAX_UPLOAD_MB)
if upload is not None:
    try:
        loaded = st.session_state.setdefault("md_uploaded_models", {})
        upload_key = (upload.file_id, selection.dataset, selection.model)
        if upload_key not in loaded:
            loaded.clear()  # one uploaded model kept per session
            loaded[upload_key] = load_uploaded_checkpoint(upload.getvalue(), upload.name, selection.model,
                                                          prep.dataset)
        uploaded_model = loaded[upload_key]
        mine = report(("upload", *upload_key), lambda: (uploaded_model, prep.dataset))
    except UserError as exc:
        widgets.show_user_error(exc)
    else:
        pairs = (("test", mine.test, base.test), ("train", mine.train, base.train))
        for col, (split, new, old) in zip(st.columns(3), pairs):
            col.metric(f"{split} accuracy of {upload.name}", f"{new:.1f} %", f"{new - old:+.1f} vs baseline")
        st.plotly_chart(per_class_bars(dataset.classes, baseline=base.per_class, uploaded=mine.per_class),
                        width="stretch", key="md_per_class_upload")
        left, right = st.columns(2)
        left.plotly_chart(confusion_figure(base.confusion, dataset.classes, "baseline"), width="stretch",
                          key="md_confusion_base")
        right.plotly_chart(confusion_figure(mine.confusion, dataset.classes, upload.name), width="stretch",
                           key="md_confusion_upload")
        chosen = (selection.checkpoint is not None
                  and st.session_state[state.BASELINE_UPLOAD]["hash"] == weights_hash(uploaded_model))
        if chosen:
            st.success(f"{upload.name} is the baseline every page forgets from (the sidebar can switch back).")
        elif st.button(f"Forget from {upload.name} instead of the trained baseline", key="md_use_checkpoint",
                       type="primary"):
            compute.use_uploaded_baseline(uploaded_model, upload.name, selection.dataset, selection.model)
            st.rerun()

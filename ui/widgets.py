"""Shared widgets: the sidebar selection, metric cards, and user-error display."""
from __future__ import annotations

import math

import streamlit as st

from core.data.registry import DATASETS, available_datasets
from core.evaluation.accuracy import EvalResult
from core.compare.methods import METHODS
from core.method.importance import MODES
from core.models.registry import MODELS
from ui import state

def model_choices() -> list[str]:
    """The models the app offers (their declarations say; e.g. one that needs the model hub is CLI-only)."""
    return [name for name in MODELS if MODELS.get(name).in_app]
# α on a log scale: roughly even steps in log α from 0.5 to 100 (the paper uses 1 … 50).
ALPHA_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0,
              7.0, 8.0, 9.0, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0, 60.0, 70.0, 80.0, 100.0)
LAMBDA_MAX = 5.0


def sidebar(extra: dict | None = None) -> state.Selection:
    """Draw the shared sidebar; returns the selection (also written to the URL, with the page's
    own parameters ``extra``: a run stopped early by a newer one must not leave them out)."""
    state.begin_full_run()
    state.init_from_url()
    state.follow_method()
    with st.sidebar:
        choices = available_datasets()
        if st.session_state[state.DATASET] not in choices:
            state.warn_url(f"data set '{st.session_state[state.DATASET]}' is not available here; using digits "
                           "(CIFAR needs its files in $LFSSD_DATA_DIR)")
            st.session_state[state.DATASET] = "digits"
        st.selectbox("Data set", choices, key=state.DATASET, format_func=lambda n: DATASETS.get(n).label or n,
                     help="\n".join(f"- **{DATASETS.get(n).label or n}**: {DATASETS.get(n).description}" for n in choices))
        models = model_choices()
        if st.session_state[state.MODEL] not in models:
            state.warn_url(f"model '{st.session_state[state.MODEL]}' is not offered here; using small_cnn")
            st.session_state[state.MODEL] = "small_cnn"
        st.selectbox("Model", models, key=state.MODEL, format_func=lambda n: MODELS.get(n).label or n,
                     help="\n".join(f"- **{MODELS.get(n).label or n}**: {MODELS.get(n).description}" for n in models))
        recipe_picker()
        target_picker()
        methods = state.dampening_methods()
        st.radio("Method", methods, key=state.METHOD, horizontal=True, format_func=lambda n: METHODS.get(n).column,
                 help="\n".join(f"- **{METHODS.get(n).column}**: {METHODS.get(n).summary}" for n in methods))
        st.radio("Importance mode", MODES, key=state.MODE, horizontal=True,
                 help="batch: the reference code (|batch-mean gradient|); sample: the paper's equation 3")
        baseline_source()
        st.caption("α and λ: sliders on the Forget, Sensitivity and Importance pages. The address bar always "
                   "holds a link to this exact view.")
        for message in state.url_warnings():
            st.warning(message)
    selection = state.current()
    state.write_to_url(selection, extra)
    return selection


def selection_without_sidebar(extra: dict | None = None) -> state.Selection:
    """What ``sidebar`` does for the selection, drawing nothing (presenter mode)."""
    state.begin_full_run()
    state.init_from_url()
    state.follow_method()
    selection = state.current()
    state.write_to_url(selection, extra)
    return selection


def recipe_picker() -> None:
    """How the model is trained, where the recipes differ for it (e.g. the small CNN's wrong-logit
    penalty); elsewhere the one recipe they amount to is used and nothing is drawn."""
    from core.models.recipes import RECIPES
    from core.models.training import default_config

    s = st.session_state
    if s[state.RECIPE] not in RECIPES:
        state.warn_url(f"recipe '{s[state.RECIPE]}' is unknown; using default")
        s[state.RECIPE] = "default"
    distinct = {name: default_config(s[state.MODEL], s[state.DATASET], recipe=name) for name in RECIPES}
    if len(set(distinct.values())) > 1:  # drawn on some runs only: the radio edits RECIPE, it does not own it
        state.bind(state.W_RECIPE, s[state.RECIPE], identity=tuple(RECIPES))
        st.radio("Training recipe", list(RECIPES), key=state.W_RECIPE, horizontal=True,
                 format_func=lambda n: RECIPES.get(n).label, on_change=_copy, args=(state.W_RECIPE, state.RECIPE),
                 help="\n".join(f"- **{RECIPES.get(n).label}**: {RECIPES.get(n).help}" for n in RECIPES)
                 + "\n\nThe retrained reference is trained with the same recipe.")


def baseline_source() -> None:
    """Which model is forgotten from: the trained default, or a checkpoint uploaded on Model & data."""
    upload = st.session_state.get(state.BASELINE_UPLOAD)
    if upload is None:
        return
    s = st.session_state
    if (upload["dataset"], upload["model"]) != (s[state.DATASET], s[state.MODEL]):
        st.caption(f"Your checkpoint {upload['name']} is for {upload['model']} on {upload['dataset']}: "
                   "using the trained baseline here.")
        return
    st.info(f"Baseline: your checkpoint **{upload['name']}**")
    st.button("Use the trained baseline instead", key="use_trained_baseline",
              on_click=lambda: s.pop(state.BASELINE_UPLOAD, None))


def _copy(source: str, target: str) -> None:
    st.session_state[target] = st.session_state[source]


def alpha_slider(ceiling: float | None = None, ceiling_note: str | None = None) -> float:
    """α on a log scale; values past the ratio ceiling (≈ |D|/|D_f|) are marked.

    The slider displays and edits ALPHA, which it does not own (``state.bind``): its own key copies
    into ALPHA on change, so the value survives pages and runs that draw no slider.
    """
    s = st.session_state
    alpha = float(s[state.ALPHA])

    def label(a: float) -> str:
        return f"{a:g}" + (" (past the ceiling)" if ceiling is not None and a > ceiling else "")

    options = sorted({*ALPHA_GRID, alpha})
    # the browser redraws a select slider whose option labels changed (a new ceiling marks other
    # options) at its first option: the labels are part of what must not change unseen
    state.bind(state.W_ALPHA, alpha, identity=tuple(label(a) for a in options))
    st.select_slider("α — selection threshold (log scale)", options, key=state.W_ALPHA,
                     format_func=label, on_change=state.hand_alpha_back, args=(state.W_ALPHA, state.ALPHA),
                     help="an element is dampened when I_Df > α·I_D: lower α dampens more"
                          + (f". Ceiling ≈ {ceiling:.3g} ({ceiling_note or '|D|/|D_f|'}): α above it dampens next "
                             "to nothing." if ceiling is not None else ""))
    return float(s[state.ALPHA])


def auto_control(choice) -> None:
    """The Auto toggle beside the α slider: on, the α rule sets α and λ (and the URL says
    alpha=auto); the sentence below says why it chose them, the expander shows the curve it read."""
    from core.method.alpha import ALPHA_RULES

    s = st.session_state
    state.bind(state.W_AUTO, bool(s.get(state.ALPHA_RULE)))

    def toggled() -> None:
        s[state.ALPHA_RULE] = "auto" if s[state.W_AUTO] else None

    st.toggle("Auto α", key=state.W_AUTO, on_change=toggled,
              help=f"{ALPHA_RULES.get('auto').label}: {ALPHA_RULES.get('auto').help}. Needs no label and no "
                   "retrained model. A slider move hands α back to you.")
    if choice is not None:
        st.caption(f"**Auto**: {choice.reason}.")


def alpha_lambda_controls(prep, choice) -> None:
    """The α and λ sliders side by side, with the Auto toggle (and its sentence) under them."""
    alpha_col, lambda_col = st.columns([3, 2])
    with alpha_col:
        alpha_slider(prep.alpha_ceiling, prep.ceiling_note)
    with lambda_col:
        lambda_slider()
    auto_control(choice)


def auto_curve(choice) -> None:
    """What the rule read as α varied, below the charts (one line when collapsed)."""
    from core.plots.forget import alpha_rule_figure

    if choice is None or not choice.curve:
        return
    with st.expander(f"How Auto chose α = {choice.alpha:g}, λ = {choice.lambda_:g}"):
        st.plotly_chart(alpha_rule_figure(choice), width="stretch", key="auto_curve")
        st.caption("Read from the model's outputs only (no label, no retrained model): the share of the forget "
                   "images that keep the baseline's answer, and the share of the rest of D (a fixed sample, less "
                   "the classes the forget images crowd into) that keep theirs, as α falls from the ceiling.")


def lambda_slider() -> float:
    """λ, bound to LAMBDA like α (its range is part of the widget's identity)."""
    s = st.session_state
    lambda_ = float(s[state.LAMBDA])
    top = max(LAMBDA_MAX, lambda_)
    state.bind(state.W_LAMBDA, lambda_, identity=(top,))
    st.slider("λ — dampening constant", 0.0, top, step=0.1, key=state.W_LAMBDA,
              on_change=state.hand_alpha_back, args=(state.W_LAMBDA, state.LAMBDA),
              help="a dampened element is multiplied by β = min(λ·I_D/I_Df, 1): lower λ dampens harder")
    return float(s[state.LAMBDA])


def _class_label(index: int, classes: tuple[str, ...]) -> str:
    return classes[index] if classes[index] == str(index) else f"{index}: {classes[index]}"


def target_picker() -> None:
    """What to forget: a class, random training images, or unlabelled images (test split or upload)."""
    from ui.compute import dataset

    data = dataset(st.session_state[state.DATASET])
    classes, subclasses = data.classes, data.fine_classes or ()
    state.init_picker(len(classes), len(subclasses))
    values = state.picker_values(len(classes), len(subclasses))
    kinds = [k for k in state.TARGET_KINDS if k != "subclass" or subclasses]  # sub-classes: CIFAR-20 only

    def bound(widget, field: str, *args, **kwargs):
        """A picker widget showing the memory's value and writing an edit back to it (and TARGET)."""
        state.bind(field, values[field], identity=(st.session_state[state.DATASET],))
        return widget(*args, key=field, on_change=state.picker_changed, args=(field,), **kwargs)

    bound(st.radio, state.T_KIND, "What to forget", kinds, format_func=state.TARGET_KINDS.get)
    kind = values[state.T_KIND]
    if kind == "class":
        bound(st.selectbox, state.T_CLASS, "Class", range(len(classes)), format_func=lambda i: _class_label(i, classes))
    elif kind == "subclass":
        superclass = _superclass_names(data)
        bound(st.selectbox, state.T_SUBCLASS, "Sub-class", range(len(subclasses)),
              format_func=lambda i: f"{subclasses[i]} (in {superclass[i]})")
    elif kind == "random":
        left, right = st.columns(2)
        with left:
            bound(st.number_input, state.T_N, "How many", 1, 1000, step=10)
        with right:
            bound(st.number_input, state.T_SEED, "Seed", 0, 10_000)
    else:
        bound(st.radio, state.T_SOURCE, "Images", list(state.IMAGE_SOURCES), format_func=state.IMAGE_SOURCES.get,
              help="LFSSD needs no labels: the images' classes are never used")
        if values[state.T_SOURCE] == "test":
            bound(st.selectbox, state.T_IMAGE_CLASS, "Test images of class", range(len(classes)),
                  format_func=lambda i: _class_label(i, classes))
        elif values[state.T_SOURCE] == "examples":
            st.caption("Handwritten 3s from MNIST, by writers other than the digits set's: never in its training "
                       "set (assets/examples/PROVENANCE.md).")
        else:
            st.file_uploader("Images to forget (PNG, JPEG, GIF, BMP, WebP, TIFF)", accept_multiple_files=True,
                             type=["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"], key=state.UPLOADS,
                             on_change=state.uploads_edited)
            kept = state.uploaded_files()
            if kept and not st.session_state.get(state.UPLOADS):  # drawn anew, empty: the files are still in use
                names = ", ".join(name for name, _ in kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
                note, clear = st.columns([3, 1], vertical_alignment="center")
                note.caption(f"In use: {len(kept)} image(s) uploaded earlier ({names}); upload again to replace them.")
                clear.button("Clear", key="uploads_clear", on_click=state.forget_uploads,
                             help="stop using the images uploaded earlier")
            model_inputs(data)


MODEL_INPUTS_SHOWN = 6


def model_inputs(data) -> None:
    """Each upload beside what the model is given (a digit set's images are made from the ink)."""
    import numpy as np
    from PIL import Image

    from core.errors import UserError
    from core.data.images import preview
    from ui.compute import decoded_uploads

    files = dict(state.uploaded_files())
    if not files:
        return
    try:
        images, names, _, _ = decoded_uploads(data)
    except UserError:
        return  # the page says what is wrong with them
    how = ("cropped to the ink, centred and scaled as the set's own digits" if data.digit_box else "resized")
    with st.expander(f"What the model sees ({len(names)} image(s), {how})", expanded=len(names) <= 3):
        for name, image in list(zip(names, images))[:MODEL_INPUTS_SHOWN]:
            original, given = st.columns(2)
            picture = preview(files[name], name)  # never the user's bytes as they are
            if picture is not None:
                original.image(picture, caption=name, width=72)
            pixels = image.permute(1, 2, 0).numpy().squeeze(-1) if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
            big = Image.fromarray(np.ascontiguousarray(pixels)).resize((72, 72), Image.NEAREST)
            given.image(big, caption=f"model input {image.shape[2]}×{image.shape[1]}", width=72)
        if len(names) > MODEL_INPUTS_SHOWN:
            st.caption(f"… and {len(names) - MODEL_INPUTS_SHOWN} more")


def _superclass_names(data) -> list[str]:
    """Each fine class's superclass name, read off the training labels."""
    names = ["?"] * len(data.fine_classes)
    for fine, coarse in zip(data.fine_train_y.tolist(), data.train_y.tolist()):
        names[fine] = data.classes[coarse]
    return names


def _delta(new: float | None, old: float | None, always: bool = False) -> str | None:
    """The change against the baseline; "±0.0" for none when ``always`` (a judged card keeps its
    colour even when the figure did not move), else no delta."""
    if new is None or old is None or math.isnan(new) or math.isnan(old):
        return None
    if abs(new - old) < 0.05:
        return "±0.0" if always else None
    return f"{new - old:+.1f}"


# How far from the retrained model a figure may be and still count as retrain-like (points): the
# method's goal is the model that never saw D_f, not 0 (SPEC §4; the automatic-α study uses the same).
RETRAIN_TOLERANCE = {"d_r": 1.0, "d_f": 5.0, "mia": 10.0}


def _arrow(delta: str | None) -> str:
    return "off" if delta == "±0.0" else "auto"


def judge(field: str, value: float | None, reference: float | None) -> tuple[str, str | None]:
    """(delta colour, words) for a figure against the retrained model's: green within the tolerance,
    orange within three times it, red beyond; gray without a reference. D_f or MIA well below the
    reference is over-forgetting (itself detectable), well above it under-forgetting; D_r only
    counts when it falls below the reference."""
    if value is None or reference is None:
        return "gray", None
    tolerance, gap = RETRAIN_TOLERANCE[field], value - reference
    miss = max(-gap, 0.0) if field == "d_r" else abs(gap)
    color = "green" if miss <= tolerance else "orange" if miss <= 3 * tolerance else "red"
    if miss <= tolerance:  # short: a card is ~150 px wide at 1280 px; the colour carries the verdict
        words = f"retrain {reference:.1f}"
    elif field == "d_r":
        words = f"retrain {reference:.1f} · lost"
    else:
        words = f"retrain {reference:.1f} · {'over' if gap < 0 else 'under'}"
    return color, words


def _reference(retrain: EvalResult | None, field: str) -> float | None:
    return getattr(retrain, field, None) if retrain is not None else None


DEFINITIONS = {  # what each card measures, by target kind
    "class": "**D_r**: test accuracy on the other classes · **D_f**: on the forgotten class · ",
    "subclass": "**D_r**: test accuracy outside the sub-class · **D_f**: test accuracy on the forgotten sub-class "
                "(scored on its superclass) · ",
    "random": "**D_r**: accuracy on the whole test split · **D_f**: accuracy on the forgotten *training* images · ",
    "images": "**test accuracy**: the whole test split (it is D_r here: every class is retained) · **D_f**: none, "
              "the images have no labels (the gallery and the prediction shift show what changed) · ",
}


def metric_cards(base: EvalResult, new: EvalResult, dampened_fraction: float, dampened: int,
                 retrain: EvalResult | None = None, target_kind: str = "class", reference_note: str | None = None,
                 reference_about: str | None = None) -> None:
    """Scores after forgetting. Deltas: the change against the baseline; their colour: how close the
    figure is to the retrained model's (``judge``), gray where there is no reference."""
    labelled = new.d_f_split is not None
    cols = st.columns(5 if labelled else 4)
    cells = iter(cols)
    if labelled:
        color, words = judge("d_r", new.d_r, _reference(retrain, "d_r"))
        delta = _delta(new.d_r, base.d_r, always=color != "gray")
        next(cells).metric(f"D_r accuracy ({base.d_r_split})", f"{new.d_r:.1f} %", delta, delta_color=color,
                           delta_arrow=_arrow(delta), delta_description=words)
        color, words = judge("d_f", new.d_f, _reference(retrain, "d_f"))
        delta = _delta(new.d_f, base.d_f, always=color != "gray")
        next(cells).metric(f"D_f accuracy ({base.d_f_split})", "—" if new.d_f is None else f"{new.d_f:.1f} %",
                           delta, delta_color=color, delta_arrow=_arrow(delta), delta_description=words)
        next(cells).metric("test accuracy", f"{new.test:.1f} %", _delta(new.test, base.test), delta_color="gray")
    else:
        next(cells).metric("test accuracy (whole split = D_r)", f"{new.test:.1f} %", _delta(new.test, base.test),
                           delta_color="gray")
        next(cells).metric("D_f accuracy (no labels)", "—",
                           help="unlabelled forget images have no accuracy: the gallery and the prediction shift "
                                "below show what changed")
    mia_help = ("share of forget samples an entropy-based logistic regression calls 'member' (×100); "
                f"the goal is the retrained model's value, not 0. Fitted on {new.mia_sets}.")
    mia_cell = next(cells)
    if new.mia is not None:
        color, words = judge("mia", new.mia, _reference(retrain, "mia"))
        delta = _delta(new.mia, base.mia, always=color != "gray")
        mia_cell.metric("MIA (entropy attack)", f"{new.mia:.1f}", delta, delta_color=color, delta_arrow=_arrow(delta),
                        delta_description=words, help=mia_help)
    else:
        mia_cell.metric("MIA (entropy attack)", "—", help=f"{mia_help} No number: {new.mia_note}.")
    next(cells).metric("parameters dampened", f"{dampened_fraction * 100:.2f} %", f"{dampened:,} elements",
                       delta_color="off", delta_arrow="off")
    reference = (reference_note or ("colour: distance to the retrained model (green within "
                                    f"{RETRAIN_TOLERANCE['d_f']:g} points for D_f, {RETRAIN_TOLERANCE['mia']:g} "
                                    "for the MIA; orange within 3×; red beyond; *over* / *under*: forgotten too "
                                    "much, itself a detectable trace / too little)" if retrain is not None else
                                    "no retrained reference yet, so the deltas are gray"))
    about = f" · {reference_about}" if retrain is not None and reference_about else ""
    if new.mia is None:
        sets = f" · **MIA: no number** after forgetting, because {new.mia_note}; attack fitted on {new.mia_sets}"
    elif not new.mia_sets.endswith("(the papers' sets)"):
        sets = f" · MIA attack fitted on {new.mia_sets}"
    else:
        sets = ""
    st.caption(DEFINITIONS.get(target_kind, DEFINITIONS["class"])
               + f"**MIA**: % of the forget images the entropy attack calls members · {reference}{about}{sets}.")


def prepared_or_stop(selection: state.Selection):
    """(the prepared experiment, its key) for a page; a user's mistake is shown and the page stops."""
    from core.errors import UserError
    from ui import compute

    try:
        prep = compute.prepared(selection)
    except UserError as exc:
        show_user_error(exc)
        st.stop()
    return prep, compute.experiment_key(prep)


def show_user_error(exc: Exception, suffix: str = "") -> None:
    """A user's mistake as an error; a page still waiting for input (an empty uploader) as a prompt."""
    from ui.compute import AwaitingInput

    if isinstance(exc, AwaitingInput):
        st.info(str(exc))
    else:
        st.error(f"{exc}{suffix}")


def interval_text(interval: tuple[float, float] | None) -> str:
    """A 95 % interval in %, "exact" where the whole set was scored, "—" where there is none."""
    if interval is None:
        return "—"
    low, high = interval
    return "exact" if low == high else f"{low:.1f}–{high:.1f} %"


def subset_caption(result: EvalResult) -> None:
    """What a subset evaluation scored, and how far its accuracies could be from the full ones."""
    s = result.sample
    if s is None:
        return
    ci = s.intervals
    st.caption(
        f"**Estimated on a fixed stratified subset** (seed {s.seed}): {s.test_scored:,} of {s.test_total:,} test "
        f"images and {s.train_scored:,} of {s.train_total:,} training images, every forget sample included. "
        f"{s.confidence:.0%} intervals — D_r {interval_text(ci.get('d_r'))}, D_f {interval_text(ci.get('d_f'))}, "
        f"test {interval_text(ci.get('test'))}. MIA: attack refit on the subset; no interval. "
        "Deltas are against the baseline on the same subset; **Full evaluation** scores every image.")

"""The user's selection: constant session-state keys, mirrored in the URL so a link reopens a view."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.data.splits import ForgetSpec

DATASET, MODEL, TARGET, ALPHA, LAMBDA, METHOD, MODE = "dataset", "model", "target", "alpha", "lambda", "method", "mode"
RECIPE = "recipe"
# in the order they are filled: α's default depends on the data set, the target and the method
DEFAULTS = {DATASET: "digits", MODEL: "small_cnn", RECIPE: "default", TARGET: "class:3", METHOD: "lfssd", ALPHA: 3.5,
            LAMBDA: 1.0, MODE: "batch"}
FLOATS = (ALPHA, LAMBDA)
# The target picker's own widgets; TARGET (the URL-able spec string) is composed from them.
T_KIND, T_CLASS, T_SUBCLASS, T_N, T_SEED, T_SOURCE, T_IMAGE_CLASS, UPLOADS = (
    "t_kind", "t_class", "t_subclass", "t_n", "t_seed", "t_source", "t_image_class", "uploads")
TARGET_KINDS = {"class": "a whole class", "subclass": "a sub-class", "random": "random training images",
                "images": "images, without labels"}
# The α and λ sliders' own keys: ALPHA and LAMBDA hold the values on pages that draw no slider.
W_ALPHA, W_LAMBDA = "alpha_slider", "lambda_slider"
W_RECIPE = "recipe_radio"
# An α rule (core.method.alpha, e.g. "auto") in charge of α and λ, or None: the sliders' own values.
# Owned here; the Auto toggle (W_AUTO) edits it, a slider move hands α back to the user.
ALPHA_RULE, W_AUTO = "_alpha_rule", "auto_toggle"  # the recipe radio's own key (it is not drawn for models whose recipes coincide)
# A checkpoint the user uploaded and chose as the baseline: {"path", "name", "dataset", "model"}.
BASELINE_UPLOAD = "baseline_upload"
IMAGE_SOURCES = {"test": "test images of one class (labels hidden)", "upload": "images I upload",
                 "examples": "example 3s in other hands (shipped)"}
UPLOAD_TARGET = "images:upload"
EXAMPLES_TARGET = "images:examples"  # assets/examples/threes: MNIST 3s, never in the digits training set
# The uploaded images, owned here as ((name, bytes), …): Streamlit drops a file uploader's files
# whenever a run does not draw it (another target kind, another page), so the widget only edits this.
UPLOADED = "_uploaded"


def uploads_edited() -> None:
    """The uploader's on_change: the user added or removed files (possibly all of them)."""
    s = st.session_state
    s[UPLOADED] = tuple((f.name, f.getvalue()) for f in s.get(UPLOADS) or [])


def uploaded_files() -> tuple:
    """((name, bytes), …) of this session's uploads, kept while the uploader is not drawn."""
    s = st.session_state
    if s.get(UPLOADS):  # the widget holds files (also when set without its callback, e.g. by AppTest)
        uploads_edited()
    return s.get(UPLOADED, ())


def forget_uploads() -> None:
    st.session_state[UPLOADED] = ()


@dataclass(frozen=True)
class Selection:
    dataset: str
    model: str
    target: str
    alpha: float
    lambda_: float
    method: str
    mode: str
    checkpoint: str | None = None  # an uploaded baseline (session only: a link cannot carry a file)
    recipe: str = "default"
    alpha_rule: str | None = None  # α and λ are the rule's choice (the URL says alpha=<rule>)  # how the baseline and its retrained reference are trained (core.models.recipes)


# --- widgets that display and edit a value they do not own -----------------------------------------
#
# The selection (ALPHA, LAMBDA, TARGET and the picker's memory) is owned by plain session-state keys.
# Widgets only show and edit it: ``bind`` gives a widget the owner's value before it is drawn, and
# the widget's on_change copies an edit back to the owner.
FULL_RUN, BOUND = "_full_run", "_bound_widgets"


def begin_full_run() -> None:
    """Count full script runs (the sidebar calls this; fragment runs do not pass through it)."""
    st.session_state[FULL_RUN] = st.session_state.get(FULL_RUN, 0) + 1


def _page() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.page_script_hash if ctx is not None else ""


def bind(widget_key: str, value, identity: tuple = ()) -> None:
    """Make the widget ``widget_key``, about to be drawn, show ``value`` (its owner's value).

    Streamlit keeps a widget's value only while it stays the same widget: drawn in every full run,
    on the same page (the page is part of its element ID), with the same identity-defining arguments
    (``identity``, e.g. a slider's range). Otherwise the browser draws a new widget at its default
    (a slider's minimum) while ``st.session_state`` may still hold the old value, and the next
    interaction sends that default back as if the user had chosen it. So the value is written
    whenever the widget may be new, and whenever it differs from the owner's; only then, because
    every write sends the value to the browser again, which would race with key presses.
    """
    s = st.session_state
    bound = s.setdefault(BOUND, {})
    run, signature = s.get(FULL_RUN, 0), (_page(), tuple(identity))
    last = bound.get(widget_key)
    maybe_new = last is None or last[0] != signature or last[1] < run - 1
    if maybe_new or s.get(widget_key) != value:
        s[widget_key] = value
    bound[widget_key] = (signature, run)


URL_WARNINGS = "_url_warnings"
# What a URL may set α and λ to; outside, the nearest bound is used, with a warning. The slider
# grid spans 0.5–100; the engine accepts any α > 0, so a link may go a little past the slider.
ALPHA_RANGE, LAMBDA_RANGE = (0.1, 1000.0), (0.0, 10.0)


def warn_url(message: str) -> None:
    """Say that a value from the URL (or the session) was replaced, naming it and what is used instead."""
    st.session_state.setdefault(URL_WARNINGS, []).append((message, st.session_state.get(FULL_RUN, 0)))


def url_warnings() -> list[str]:
    """The replacement warnings to show now: those of this full run and of the one before it (a page
    that reruns itself at once, e.g. after training the retrained reference, would otherwise lose them)."""
    run = st.session_state.get(FULL_RUN, 0)
    kept = [(m, r) for m, r in st.session_state.get(URL_WARNINGS, []) if run - r <= 1]
    st.session_state[URL_WARNINGS] = kept
    return list(dict.fromkeys(m for m, _ in kept))


def init_from_url() -> None:
    """Fill every missing key: from the URL on a session's first run, else from the defaults. Names
    are case-insensitive; a value that cannot be used warns and names what is used instead."""
    first_run = not st.session_state.get("_initialised")
    params = st.query_params
    for key, default in DEFAULTS.items():
        if key in st.session_state:
            continue
        value, raw = default, params.get(key) if first_run else None
        if key == ALPHA:  # DEFAULTS lists the data set, target and method first: α suits them
            value = suggested_alpha(st.session_state[DATASET], st.session_state[TARGET], st.session_state[METHOD])
        if key == ALPHA and raw is not None and is_alpha_rule(raw):
            st.session_state[ALPHA_RULE], raw = str(raw).strip().lower(), None  # the page applies it
        if raw is not None:
            value, problem = url_value(key, raw, value)
            if problem:
                warn_url(f"URL parameter {key}={raw!r}: {problem}")
        st.session_state[key] = value
    st.session_state["_initialised"] = True


def url_value(key: str, raw: str, fallback):
    """(the value to use, why it differs from ``raw`` or None). ``fallback``: the default."""
    from core.method.importance import MODES
    from core.models.recipes import RECIPES

    text = str(raw).strip()
    if key in FLOATS:
        from core.errors import UserError
        from core.method.dampening import check_alpha, check_lambda

        low, high = ALPHA_RANGE if key == ALPHA else LAMBDA_RANGE
        try:
            value = (check_alpha if key == ALPHA else check_lambda)(text, "α" if key == ALPHA else "λ")
        except UserError as exc:
            return fallback, f"{exc}; using {fallback:g}"
        if not low <= value <= high:
            used = min(max(value, low), high)
            return used, f"outside {low:g}–{high:g}; using {used:g}"
        return value, None
    choices = {METHOD: dampening_methods(), MODE: MODES, RECIPE: RECIPES.names()}.get(key)
    if choices is not None:
        if text.lower() in choices:
            return text.lower(), None
        return fallback, f"not one of {', '.join(choices)}; using {fallback}"
    if key in (DATASET, MODEL):
        return text.lower(), None  # availability is checked where the choices are drawn
    return text, None  # TARGET: the picker checks it


def is_alpha_rule(text) -> bool:
    from core.method.alpha import ALPHA_RULES

    return str(text).strip().lower() in ALPHA_RULES


def hand_alpha_back(source: str, target: str) -> None:
    """A slider's on_change: copy its value to the owner, and the user, not a rule, sets α and λ now."""
    st.session_state[target] = st.session_state[source]
    st.session_state[ALPHA_RULE] = None


def dampening_methods() -> list[str]:
    """The methods the Forget page runs (those that dampen by an importance ratio: α and λ apply)."""
    from core.compare.methods import METHODS
    from core.method.importance import KINDS

    names = [name for name in METHODS if METHODS.get(name).importance_kind in KINDS]
    return sorted(names, key=lambda name: KINDS.index(METHODS.get(name).importance_kind))  # LFSSD first


def current() -> Selection:
    init_from_url()
    s = st.session_state
    upload = s.get(BASELINE_UPLOAD)
    checkpoint = upload["path"] if upload and (upload["dataset"], upload["model"]) == (s[DATASET], s[MODEL]) else None
    return Selection(s[DATASET], s[MODEL], s[TARGET], float(s[ALPHA]), float(s[LAMBDA]), s[METHOD], s[MODE],
                     checkpoint, s[RECIPE], s.get(ALPHA_RULE))


def write_to_url(selection: Selection, extra: dict | None = None) -> None:
    """The whole selection; the recipe only when it is not the default (links made before recipes
    existed, which name none, mean the default). ``extra``: a page's own parameters (the lesson's step)."""
    params = {DATASET: selection.dataset, MODEL: selection.model, TARGET: selection.target,
              ALPHA: selection.alpha_rule or f"{selection.alpha:g}", LAMBDA: f"{selection.lambda_:g}",
              METHOD: selection.method, MODE: selection.mode}
    if selection.recipe != DEFAULTS[RECIPE]:
        params[RECIPE] = selection.recipe
    st.query_params.from_dict({**params, **(extra or {})})


def suggested_alpha(dataset: str, target: str, method: str = "lfssd") -> float:
    from core.compare.methods import default_method_alpha

    try:
        return default_method_alpha(method, dataset, ForgetSpec.parse(target).kind)
    except ValueError:
        return DEFAULTS[ALPHA]


# Each method keeps its own α (SSD's squared ratios want a higher one): ALPHA is the α of the method
# in use; switching method puts the other's last α (or its default) on the slider and in the URL.
ALPHA_BY_METHOD, ALPHA_METHOD = "_alpha_by_method", "_alpha_method"


def follow_method() -> None:
    """Swap α when the method changed since the last full run (called before anything is drawn)."""
    s = st.session_state
    memory = s.setdefault(ALPHA_BY_METHOD, {})
    previous = s.get(ALPHA_METHOD)
    if previous is not None and previous != s[METHOD]:
        memory[previous] = s[ALPHA]
        s[ALPHA] = memory.get(s[METHOD], suggested_alpha(s[DATASET], s[TARGET], s[METHOD]))
    s[ALPHA_METHOD] = s[METHOD]


def alpha_for(method: str) -> float:
    """The α a method would use now: the slider's for the method in use, else its own last one."""
    s = st.session_state
    if method == s[METHOD]:
        return float(s[ALPHA])
    return float(s.get(ALPHA_BY_METHOD, {}).get(method, suggested_alpha(s[DATASET], s[TARGET], method)))


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} '{text}' is not a whole number") from None


RANDOM_MAX, SEED_MAX = 1000, 10_000  # the picker's number inputs


def picker_from_target(target: str, num_classes: int, num_subclasses: int = 0) -> dict:
    """Picker widget values that reproduce a target spec (from a URL); raises ValueError if bad."""
    kind, _, value = target.strip().partition(":")
    kind = kind.lower()
    if kind == "class":
        cls = _whole(value, "class")
        if not 0 <= cls < num_classes:
            raise ValueError(f"class {cls} does not exist")
        return {T_KIND: "class", T_CLASS: cls}
    if kind == "subclass":
        fine = _whole(value, "sub-class")
        if not 0 <= fine < num_subclasses:
            raise ValueError(f"sub-class {fine} does not exist" if num_subclasses else "this data set has no sub-classes")
        return {T_KIND: "subclass", T_SUBCLASS: fine}
    if kind == "random":
        n_text, _, seed_text = value.partition(":")
        n, seed = _whole(n_text, "count"), _whole(seed_text or "0", "seed")
        if not 1 <= n <= RANDOM_MAX:
            raise ValueError(f"random:{n} must pick 1–{RANDOM_MAX} images")
        if not 0 <= seed <= SEED_MAX:
            raise ValueError(f"seed {seed} must be 0–{SEED_MAX}")
        return {T_KIND: "random", T_N: n, T_SEED: seed}
    if kind == "images" and value.lower() in ("upload", "examples"):
        return {T_KIND: "images", T_SOURCE: value.lower()}
    if kind == "images" and value.lower().startswith("test:"):
        cls = _whole(value[len("test:"):], "class")
        if not 0 <= cls < num_classes:
            raise ValueError(f"class {cls} does not exist")
        return {T_KIND: "images", T_SOURCE: "test", T_IMAGE_CLASS: cls}
    raise ValueError(f"'{target}' is not a target the app can show")


PICKER = "_picker"  # the picker's memory: every field's last value, drawn or not (owned here, not by widgets)
PICKER_FIELDS = (T_KIND, T_CLASS, T_SUBCLASS, T_N, T_SEED, T_SOURCE, T_IMAGE_CLASS)


def target_from_values(values: dict) -> str:
    if values[T_KIND] == "class":
        return f"class:{values[T_CLASS]}"
    if values[T_KIND] == "subclass":
        return f"subclass:{values[T_SUBCLASS]}"
    if values[T_KIND] == "random":
        return f"random:{values[T_N]}:{values[T_SEED]}"
    if values[T_SOURCE] in ("upload", "examples"):
        return f"images:{values[T_SOURCE]}"
    return f"images:test:{values[T_IMAGE_CLASS]}"


def picker_values(num_classes: int, num_subclasses: int = 0) -> dict:
    """What each picker widget shows: the memory, overridden by what TARGET (the owner) says."""
    memory = st.session_state[PICKER]
    try:
        memory.update(picker_from_target(st.session_state[TARGET], num_classes, num_subclasses))
    except ValueError:
        pass  # init_picker warned once; the memory stands
    return dict(memory)


def picker_changed(field: str) -> None:
    """on_change of a picker widget: remember its value and recompose TARGET from the memory."""
    s = st.session_state
    s[PICKER][field] = s[field]
    s[TARGET] = target_from_values(s[PICKER])


def target_from_picker() -> str:
    return target_from_values(st.session_state[PICKER])


def init_picker(num_classes: int, num_subclasses: int = 0) -> None:
    """Fill the picker's memory from TARGET once per data set; a bad URL target falls back with a warning."""
    if st.session_state.get("_picker_for") == (st.session_state[DATASET], num_classes):
        return
    picker = {T_KIND: "class", T_CLASS: 3 % num_classes, T_SUBCLASS: 0, T_N: 50, T_SEED: 0, T_SOURCE: "test",
              T_IMAGE_CLASS: 3 % num_classes}
    try:
        picker.update(picker_from_target(st.session_state[TARGET], num_classes, num_subclasses))
    except ValueError as exc:
        warn_url(f"forget target '{st.session_state[TARGET]}': {exc}; using {target_from_values(picker)}")
    st.session_state[PICKER] = picker
    st.session_state[TARGET] = target_from_values(picker)
    if st.session_state.get("_picker_for") is not None:  # the user switched data sets: α to suit the new one
        st.session_state[ALPHA] = suggested_alpha(st.session_state[DATASET], target_from_picker(),
                                                  st.session_state[METHOD])
        st.session_state[ALPHA_BY_METHOD] = {}
    st.session_state["_picker_for"] = (st.session_state[DATASET], num_classes)

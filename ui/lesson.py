"""The lesson's frame: its steps (one declaration each), the step in the URL, Back/Next, the
progress line, presenter mode, and the predictions a student makes (kept in this session only).

A step's ``preset`` is the selection it is about (a target, a recipe, an α); it is applied when the
step is entered with Back/Next or opened by a link, except for what the link itself names (so a
shared link reopens exactly what was on screen). Coming to the lesson from another page keeps the
selection: the presets start with the first Next or Back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import streamlit as st

from ui import state

STEP, PRESENT = "step", "present"  # URL parameters
STEP_KEY = "_lesson_step"  # session: the step on screen
CLASS_KEY = "_lesson_class"  # session: the digit the student chose in step 1
PREDICTIONS = "_lesson_predictions"  # session: {step: what the student guessed}; never leaves the server
REVEALED = "_lesson_revealed"  # session: {step: True} once the answer is shown
DEFAULT_CLASS = 3
PLAIN_CLASS = 0  # step 7: a digit the plain-recipe model does not forget at α = 3.5 (the step says so from its numbers)
EXAMPLES_TARGET = state.EXAMPLES_TARGET
GUESS_ALPHAS = (1.0, 3.5, 50.0)  # step 3: three α values whose outcomes differ on the digit models


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    knob: str | None  # the one control on the step: "class", "lambda", "alpha", "auto", or None
    preset: Callable[[], dict] = field(default=lambda: {})  # selection keys this step is about


def _class_target() -> dict:
    return {state.TARGET: f"class:{st.session_state.get(CLASS_KEY, DEFAULT_CLASS)}", state.RECIPE: "default",
            state.ALPHA_RULE: None}


def _at(alpha: float | None = None, lambda_: float = 1.0) -> Callable[[], dict]:
    def preset() -> dict:
        values = {**_class_target(), state.LAMBDA: lambda_}
        if alpha is not None:
            values[state.ALPHA] = alpha
        return values
    return preset


STEPS = (
    Step(1, "The model, and the digit to forget", "class", _at(3.5)),
    Step(2, "Where that digit lives", None, _at(3.5)),
    Step(3, "α picks which parameters", None, _at(3.5)),
    Step(4, "λ sets how much", "lambda", _at(3.5)),
    Step(5, "Is it really forgotten?", "alpha", _at(3.5)),
    Step(6, "Forgetting without labels", "alpha",
         lambda: {state.TARGET: EXAMPLES_TARGET, state.RECIPE: "default", state.ALPHA: 3.5, state.LAMBDA: 1.0,
                  state.ALPHA_RULE: None}),
    Step(7, "When one α fails", "auto",
         lambda: {state.TARGET: f"class:{PLAIN_CLASS}", state.RECIPE: "plain", state.ALPHA: 3.5, state.LAMBDA: 1.0,
                  state.ALPHA_RULE: None}),
    Step(8, "Your turn", None, lambda: {}),
)
LAST = len(STEPS)
URL_KEYS = {state.TARGET: state.TARGET, state.RECIPE: state.RECIPE, state.ALPHA: state.ALPHA,
            state.LAMBDA: state.LAMBDA, state.ALPHA_RULE: state.ALPHA}  # selection key → its URL parameter


def step_from_url(raw) -> tuple[int, str | None]:
    """(step, why the URL's value was not used or None)."""
    if raw is None:
        return 1, None
    try:
        number = int(str(raw).strip())
    except ValueError:
        return 1, f"URL parameter step={raw!r} is not a whole number; showing step 1"
    if not 1 <= number <= LAST:
        return 1, f"URL parameter step={raw!r}: the lesson has steps 1–{LAST}; showing step 1"
    return number, None


def presenting() -> bool:
    """Presenter mode: ``present=1`` in the URL (read every run: leaving the lesson drops it)."""
    return str(st.query_params.get(PRESENT, "")).strip().lower() in ("1", "true", "yes")


def apply_preset(number: int, keep_from_url: bool = False) -> None:
    """Set the selection the step is about; ``keep_from_url``: leave what the URL names."""
    s = st.session_state
    for key, value in STEPS[number - 1].preset().items():
        if keep_from_url and URL_KEYS.get(key) in st.query_params:
            continue
        s[key] = value
    target = s.get(state.TARGET, "")
    if target.startswith("class:"):
        s[CLASS_KEY] = int(target.split(":")[1]) if number < 6 else s.get(CLASS_KEY, DEFAULT_CLASS)


def choose_class(digit: int) -> None:
    """Step 1's digit picker: the lesson's digit, and the target of the steps about it."""
    st.session_state[CLASS_KEY] = int(digit)
    st.session_state[state.TARGET] = f"class:{int(digit)}"


def target_fits(number: int) -> bool:
    """Whether the selection's target is what step ``number`` is about (a class; the shipped images
    in step 6). If not (the sidebar or a link chose another), the step says so and offers its own
    with a button, rather than changing the selection behind the user's back."""
    target = st.session_state.get(state.TARGET, "")
    if number == LAST or target.startswith(EXAMPLES_TARGET if number == 6 else "class:"):
        return True
    own = STEPS[number - 1].preset()[state.TARGET]
    about = "the example images the app ships" if number == 6 else "one digit"
    st.info(f"This step is about {about}; the selection now forgets `{target}`.")
    st.button(f"Use {own}", key="lesson_use_target", on_click=apply_preset, args=(number,), type="primary")
    return False


def current_step() -> int:
    """The step on screen: from the URL on the lesson's first run in this session, then the session's."""
    s = st.session_state
    if STEP_KEY not in s:
        session_start = not s.get("_initialised")
        state.init_from_url()  # the URL's selection first; the step's preset fills what it does not name
        number, problem = step_from_url(st.query_params.get(STEP))
        if problem:
            state.warn_url(problem)
        s[STEP_KEY] = number
        if session_start:  # a link (or the root) opened the lesson; coming from another page keeps the selection
            apply_preset(number, keep_from_url=True)
        elif s.get(state.TARGET, "").startswith("class:"):  # and the lesson's digit is the one forgotten there
            s[CLASS_KEY] = int(s[state.TARGET].split(":")[1])
    return s[STEP_KEY]


def go(number: int) -> None:
    """Back/Next's on_click: enter ``number`` with its preset."""
    st.session_state[STEP_KEY] = number
    apply_preset(number)


def url_extra(number: int) -> dict:
    extra = {STEP: str(number)}
    if presenting():
        extra[PRESENT] = "1"
    return extra


def header(number: int) -> None:
    """The progress line: a thin bar and "Step N of 8 · title" (drawn in HTML, not ``st.progress``,
    which reads as work under way: a page with one is never done loading)."""
    step, share = STEPS[number - 1], 100 * number / LAST
    st.html(f'<div role="progressbar" aria-valuemin="1" aria-valuemax="{LAST}" aria-valuenow="{number}" '
            f'aria-label="lesson progress" style="font-size:0.9rem;color:#555">'
            f'<div style="height:6px;border-radius:3px;background:#e6e9ef">'
            f'<div style="height:6px;border-radius:3px;width:{share:.1f}%;background:#d62728"></div></div>'
            f'<div style="margin-top:4px">Step {number} of {LAST} · {step.title}</div></div>')


def navigation(number: int) -> None:
    back, middle, forward = st.columns([1, 4, 1], vertical_alignment="center")
    back.button("← Back", key="lesson_back", disabled=number == 1, on_click=go, args=(number - 1,), width="stretch")
    middle.caption(" · ".join(f"**{s.number}**" if s.number == number else str(s.number) for s in STEPS),
                   help="each step has its own link: the address bar holds it, with the state on screen")
    forward.button("Next →", key="lesson_next", disabled=number == LAST, on_click=go, args=(number + 1,),
                   type="primary", width="stretch")


def prediction(number: int) -> dict:
    return st.session_state.setdefault(PREDICTIONS, {}).setdefault(number, {})


def revealed(number: int) -> bool:
    return bool(st.session_state.setdefault(REVEALED, {}).get(number))


def reveal(number: int) -> None:
    st.session_state.setdefault(REVEALED, {})[number] = True


def hide(number: int) -> None:
    st.session_state.setdefault(REVEALED, {})[number] = False


def guess_points(guesses: dict[float, tuple[float, float]], actual: dict[float, tuple[float, float]]) -> float:
    """Mean absolute error of the D_f and D_r guesses (points), over the α values guessed."""
    errors = [abs(g - a) for alpha in actual for g, a in zip(guesses[alpha], actual[alpha])]
    return sum(errors) / len(errors)


PRESENTER_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"],
[data-testid="stToolbar"], [data-testid="stDecoration"], [data-testid="stStatusWidget"] { display: none !important; }
html { font-size: clamp(16px, min(1.25vw, 2.25vh), 26px); }
[data-testid="stMainBlockContainer"] { padding-top: 1.2rem !important; max-width: 96vw; }
</style>"""

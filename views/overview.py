"""The lesson: LFSSD in seven short steps and a "your turn", each one screen with one live chart and at
most one knob; predict, then reveal. Every sentence is built from the numbers on that screen.

The root URL opens it; ``?step=N`` (with the state) opens a step; ``present=1`` is presenter mode.
"""
import numpy as np
import streamlit as st

from core.compare.evidence import pair_evidence
from core.data.registry import DATASETS
from core.models.registry import MODELS
from core.errors import UserError
from core.plots import lesson as lp
from core.plots.forget import confidence_figure, layer_bars_figure, ratio_histogram_figure
from ui import compute, lesson, state, widgets

CURVE_ALPHAS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 5.0, 7.0, 10.0, 20.0, 50.0)
CURVE_LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def _columns():
    """Narrative on the left, the live chart held in view on the right (Seeing Theory's layout)."""
    return st.columns([5, 6], gap="large")


def _chart(figure, key: str) -> None:
    """A step's live chart; on a projector (presenter mode) taller, with type to match the text's."""
    if lesson.presenting():
        figure.update_layout(font_size=17, height=int((figure.layout.height or lp.HEIGHT) * 1.3))
        if figure.layout.legend.y is not None and figure.layout.legend.y < 0:  # below the axis title, not on it
            figure.update_layout(legend=dict(yanchor="top", y=-0.4))
    st.plotly_chart(figure, width="stretch", key=key)


def _prepared():
    sel = state.current()
    prep = compute.prepared(sel)
    return sel, prep, compute.experiment_key(prep)


def _class_name(prep) -> str:
    return prep.split.description.split("'")[1] if "'" in prep.split.description else prep.split.description


def _pct(value) -> str:
    return "—" if value is None else f"{value:.1f} %"


def step_model() -> None:
    sel = state.current()
    base = compute.first_look(sel)  # no importances, no attack: this step opens the lesson, fast
    data = base.dataset
    chosen = int(sel.target.split(":")[1]) if sel.target.startswith("class:") else lesson.DEFAULT_CLASS
    name = data.classes[chosen]
    text, chart = _columns()
    with text:
        state.bind("lesson_digit", chosen)
        st.selectbox("The digit to forget", range(len(data.classes)), key="lesson_digit",
                     format_func=lambda i: data.classes[i],
                     on_change=lambda: lesson.choose_class(st.session_state["lesson_digit"]))
        st.markdown(
            f"A {MODELS.get(sel.model).label or sel.model} learnt to read the **{len(data.train_y)}** training "
            f"images of the *{DATASETS.get(sel.dataset).label or sel.dataset}* set. On the **{len(data.test_y)}** "
            f"test images it is right **{base.test:.1f} %** of the time; "
            f"on the {name}s, **{_pct(base.per_class_test[chosen])}** (red bar).\n\n"
            f"Its task now: **forget the {name}s**, the **{len(base.split.forget_train)}** training images called "
            f"**D_f**, without retraining and without their labels. **D_r** is everything else it should keep.")
    with chart:
        # inline SVG in markdown: drawn with the text, no chart library to load (st.html strips SVG)
        st.markdown(lp.class_accuracy_svg(base.per_class_test, data.classes, chosen), unsafe_allow_html=True)
        images = data.train_x[base.split.forget_train][:10]  # (n, c, h, w) uint8
        strip = np.concatenate([np.pad(image.permute(1, 2, 0).numpy(), ((1, 1), (1, 1), (0, 0)))
                                for image in images], axis=1)  # one image, one request: quicker than ten
        st.image(strip.squeeze(-1) if strip.shape[-1] == 1 else strip, width=44 * len(images),
                 caption=f"Some of D_f: the first {len(images)} training images of the {name}s")
    compute.warm_up()  # the next steps' imports and first figure, while the student reads


def step_layers() -> None:
    sel, prep, key = _prepared()
    name = _class_name(prep)
    outcome = compute.outcome(prep, sel.alpha, sel.lambda_)
    layers = list(dict.fromkeys(layer.name.rsplit(".", 1)[0] for layer in outcome.report.layers))
    guess = lesson.prediction(2)
    text, chart = _columns()
    with text:
        st.markdown(
            f"LFSSD asks each parameter how strongly the model's output depends on it: over all training images "
            f"(**I_D**) and over the {name}s alone (**I_Df**). Where I_Df > α · I_D, with α = {sel.alpha:g}, the "
            f"parameter matters disproportionately to the {name}s: it is selected (red in the histogram).\n\n"
            f"**Guess**: which layer holds the largest share of selected parameters?")
        guess["layer"] = st.radio("Your guess", layers, index=layers.index(guess["layer"]) if guess.get("layer") in layers
                                  else None, key="lesson_layer_guess", horizontal=True)
        st.button("Reveal", key="lesson_reveal_2", on_click=lesson.reveal, args=(2,), disabled=guess["layer"] is None)
        with st.expander("The formula (the paper's equation 3)"):
            st.latex(r"I_{D,i} = \frac{1}{N}\sum_{k=1}^{N}\left|\frac{\partial\,\lVert f(x_k;\theta)\rVert_2^2}"
                     r"{\partial \theta_i}\right|")
            st.caption("on the raw outputs: no loss, no labels; I_Df is the same sum over the forget images")
    with chart:
        if not lesson.revealed(2):
            _chart(ratio_histogram_figure(compute.histogram(prep, key), sel.alpha, prep.alpha_ceiling),
                   key="lesson_histogram")
            return
        shares = {}
        for layer in outcome.report.layers:
            module = layer.name.rsplit(".", 1)[0]
            got = shares.setdefault(module, [0, 0])
            got[0], got[1] = got[0] + layer.selected, got[1] + layer.numel
        best = max(shares, key=lambda m: shares[m][0] / shares[m][1])
        _chart(layer_bars_figure(outcome.report), key="lesson_layers")
        verdict = "right" if guess["layer"] == best else "not it"
        st.markdown(f"**{best}** has the largest share: {shares[best][0]} of its {shares[best][1]} elements "
                    f"({100 * shares[best][0] / shares[best][1]:.2f} %); {outcome.report.selected} selected in all "
                    f"({100 * outcome.report.fraction:.2f} %). You guessed **{guess['layer']}**: {verdict}.")


def step_alpha() -> None:
    sel, prep, key = _prepared()
    name = _class_name(prep)
    guess = lesson.prediction(3)
    text, chart = _columns()
    with text:
        st.markdown(
            f"α is the bar a parameter must clear: it is dampened when I_Df > α · I_D. A lower α selects more. "
            f"**Predict** the accuracy after dampening at three values of α: on the {name}s (**D_f**) and on "
            f"the other digits (**D_r**, before: {_pct(prep.baseline.d_r)}).")
        for alpha, col in zip(lesson.GUESS_ALPHAS, st.columns(len(lesson.GUESS_ALPHAS))):
            with col:
                st.markdown(f"**α = {alpha:g}**")
                d_f = st.slider("D_f %", 0, 100, int(guess.get(alpha, (50, 50))[0]), 5, key=f"lesson_df_{alpha:g}")
                d_r = st.slider("D_r %", 0, 100, int(guess.get(alpha, (50, 90))[1]), 5, key=f"lesson_dr_{alpha:g}")
                guess[alpha] = (d_f, d_r)
        st.button("Reveal", key="lesson_reveal_3", on_click=lesson.reveal, args=(3,))
    with chart:
        if not lesson.revealed(3):
            st.info("Make your three guesses, then press **Reveal**: the curve appears with your guesses on it.")
            return
        table = compute.sweep_table(prep, key, tuple(sorted({*CURVE_ALPHAS, *lesson.GUESS_ALPHAS})), (1.0,))
        actual = {a: (float(table.loc[table.alpha == a, "d_f"].iloc[0]), float(table.loc[table.alpha == a, "d_r"].iloc[0]))
                  for a in lesson.GUESS_ALPHAS}
        guesses = {a: guess[a] for a in lesson.GUESS_ALPHAS}
        _chart(lp.alpha_curve_figure(table, guesses), key="lesson_alpha_curve")
        st.markdown("; ".join(f"α = {a:g}: D_f **{d_f:.1f} %**, D_r **{d_r:.1f} %**" for a, (d_f, d_r) in actual.items())
                    + f". Your guesses were off by **{lesson.guess_points(guesses, actual):.0f} points** on average "
                      "(hollow circles).")


def step_lambda() -> None:
    sel, prep, key = _prepared()
    name = _class_name(prep)
    outcome = compute.outcome(prep, sel.alpha, sel.lambda_)
    text, chart = _columns()
    with text:
        st.markdown(
            f"λ sets how hard the selected parameters shrink: each is multiplied by β = min(λ · I_D / I_Df, 1). "
            f"At λ = 1 a parameter shrinks in proportion to how much more it matters to the {name}s; a larger λ "
            "shrinks less, λ = 0 zeroes them. The same parameters stay selected: α chose them.")
        widgets.lambda_slider()
        with st.expander("The formula (the paper's equation 1)"):
            st.latex(r"\theta_i \leftarrow \begin{cases}\beta\,\theta_i & I_{D_f,i} > \alpha\, I_{D,i}\\ "
                     r"\theta_i & \text{otherwise}\end{cases}\quad \beta=\min\!\left(\frac{\lambda\, I_{D,i}}"
                     r"{I_{D_f,i}},1\right)")
        current = state.current()
        st.markdown(f"At α = {current.alpha:g}, λ = {current.lambda_:g}: D_f **{_pct(outcome.result.d_f)}**, "
                    f"D_r **{_pct(outcome.result.d_r)}**, {outcome.report.selected} parameter elements dampened.")
    with chart:
        table = compute.sweep_table(prep, key, (sel.alpha,), CURVE_LAMBDAS)
        _chart(lp.lambda_curve_figure(table, sel.lambda_), key="lesson_lambda_curve")


def step_evidence() -> None:
    sel, prep, key = _prepared()
    name = _class_name(prep)
    outcome = compute.outcome(prep, sel.alpha, sel.lambda_)
    retrain = compute.retrained(prep, key)
    pair = pair_evidence(prep, outcome, compute.retrained_model_for(prep, key))
    result = outcome.result
    damp_median, retrained_median = float(np.median(pair.dampened)), float(np.median(pair.retrained))
    if damp_median < retrained_median - 1:
        trace = (f"Yet on D_f it is *less* confident in the true digit than the retrained model (median "
                 f"{damp_median:.1f} against {retrained_median:.1f}): over-forgetting, a trace of its own.")
    elif damp_median > retrained_median + 1:
        trace = (f"On D_f it stays *more* confident in the true digit than the retrained model (median "
                 f"{damp_median:.1f} against {retrained_median:.1f}): the {name}s are not gone.")
    else:
        trace = (f"On D_f its confidence in the true digit is close to the retrained model's (median "
                 f"{damp_median:.1f} against {retrained_median:.1f}).")
    text, chart = _columns()
    with text:
        mia = "no number" if result.mia is None else f"{result.mia:.1f} %"
        st.markdown(
            f"The goal is not 0 %: it is a model **retrained without the {name}s**. Here the dampened model scores "
            f"D_f **{_pct(result.d_f)}** (retrained {_pct(retrain.d_f)}), D_r **{_pct(result.d_r)}** (retrained "
            f"{_pct(retrain.d_r)}); the papers' entropy attack calls **{mia}** of D_f members (retrained "
            f"{'no number' if retrain.mia is None else f'{retrain.mia:.1f} %'}). {trace} One threshold tells the two "
            f"models apart with **ε = {pair.separation.epsilon:.2f}** (0: not at all).")
        widgets.alpha_slider(prep.alpha_ceiling, prep.ceiling_note)
    with chart:
        _chart(confidence_figure(pair), key="lesson_confidence")


def step_unlabelled() -> None:
    sel, prep, key = _prepared()
    outcome = compute.outcome(prep, sel.alpha, sel.lambda_)
    before = prep.baseline.forget_probs.argmax(1)
    after = outcome.result.forget_probs.argmax(1)
    three = prep.dataset.classes.index("3")
    text, chart = _columns()
    with text:
        st.markdown(
            f"These **{len(before)}** 3s were written by other people (MNIST's writers) and were never in the "
            f"training set; the app ships them. LFSSD needs no labels, only the images.\n\n"
            f"Before, the model calls **{int((before == three).sum())}** of them 3; after dampening at α = "
            f"{sel.alpha:g}, **{int((after == three).sum())}**. On the test set's own 3s: "
            f"**{_pct(outcome.result.per_class_test[three])}** (before {_pct(prep.baseline.per_class_test[three])}); "
            f"on all test images **{outcome.result.test:.1f} %** (before {prep.baseline.test:.1f} %).")
        widgets.alpha_slider(prep.alpha_ceiling, prep.ceiling_note)
        images = prep.split.forget_images[:12]
        for col, image, answer in zip(st.columns(len(images)), images, after[:12]):
            col.image(image.permute(1, 2, 0).numpy().squeeze(-1), clamp=True, width=36)
            col.caption(prep.dataset.classes[int(answer)])
    with chart:
        _chart(lp.answers_figure(before.tolist(), after.tolist(), prep.dataset.classes), key="lesson_answers")


def step_auto() -> None:
    sel, prep, key = _prepared()
    name = _class_name(prep)
    choice = compute.apply_alpha_rule(prep)
    sel = state.current()
    fixed = compute.outcome(prep, 3.5, 1.0).result
    retrain = compute.retrained(prep, key)
    table = compute.sweep_table(prep, key, CURVE_ALPHAS, (1.0,))
    text, chart = _columns()
    with text:
        verdict = ("far from" if fixed.d_f is not None and retrain.d_f is not None and fixed.d_f > retrain.d_f + 10
                   else "close to")
        st.markdown(
            f"This model was trained with the **plain** recipe (cross-entropy alone, without the default recipe's "
            f"small penalty on wrong-class logits). Forgetting the {name}s at α = 3.5 leaves D_f at "
            f"**{_pct(fixed.d_f)}**, {verdict} the retrained model's **{_pct(retrain.d_f)}**. Which α works depends "
            f"on the digit and on how the model was trained.\n\n"
            f"**Auto α** reads only the model's answers on the forget images and on a sample of D (no labels, no "
            f"retraining) and stops where the {name}s let go.")
        widgets.auto_control(choice)
        if choice is not None:
            now = compute.outcome(prep, sel.alpha, sel.lambda_).result
            st.markdown(f"Auto: α = **{sel.alpha:g}**, λ = {sel.lambda_:g}: D_f **{_pct(now.d_f)}**, D_r "
                        f"**{_pct(now.d_r)}** (before {_pct(prep.baseline.d_r)}).")
    with chart:
        marks = [("α = 3.5", 3.5)] + ([(f"auto α = {sel.alpha:g}", sel.alpha)] if choice is not None else [])
        _chart(lp.alpha_curve_figure(table, marks=marks, retrain=retrain), key="lesson_auto_curve")


def step_your_turn() -> None:
    sel = state.current()
    st.markdown(f"Everything you saw is live in the full pages, with the state you left here (the digit, α = "
                f"{sel.alpha:g}, λ = {sel.lambda_:g}, the {sel.recipe} recipe):")
    links = (("views/forget.py", "Forget: both knobs, every chart, downloads"),
             ("views/sensitivity.py", "Sensitivity: sweep α and λ, find the plateau"),
             ("views/evidence.py", "Evidence: every membership attack, the challenge's score"),
             ("views/compare.py", "Compare methods: LFSSD beside SSD, retraining and others"),
             ("views/importance.py", "Importance maps: what α selects, what labels change"),
             ("views/model_data.py", "Model & data: the baseline, or your own checkpoint"))
    for page, label in links:
        st.page_link(page, label=label + " →")
    st.caption("Teaching from a projector? Add `&present=1` to any step's address: no sidebar, larger type. "
               "Your predictions stay in this browser session; nothing is sent anywhere.")


VIEWS = {1: step_model, 2: step_layers, 3: step_alpha, 4: step_lambda, 5: step_evidence, 6: step_unlabelled,
         7: step_auto, 8: step_your_turn}

number = lesson.current_step()
if lesson.presenting():  # no sidebar to show what a link could not use
    for message in state.url_warnings():
        st.warning(message)
lesson.header(number)
st.subheader(lesson.STEPS[number - 1].title)
try:
    if lesson.target_fits(number):
        VIEWS[number]()
except UserError as exc:
    widgets.show_user_error(exc)
lesson.navigation(number)
state.write_to_url(state.current(), lesson.url_extra(number))

"""A model-based random walk through the real app in a real Chromium.

A seeded walk takes the actions a lecturer and a room of students take — page switches (sidebar and
the Overview's links), target kinds, classes, method, importance mode, uploads (good and bad
files), α/λ key presses, back/forward, reload, opening a copied URL — and keeps its own model of
what the selection must be. After **every** step it checks that

- the α and λ on the sliders, in the URL, in the page's captions and (on Forget, now and then) in
  the downloadable report all equal the model's α and λ;
- the page, the target, the method and the mode in the URL are the model's;
- the metric cards equal what the engine computes for the state in the URL (``core.experiment``,
  the functions ``python -m core forget`` prints; ``Walk.check_cli`` ties the two together);
- nothing shows an exception, and an error only where the input is genuinely bad.

Used by ``tests/test_browser_walk.py`` (a few seeds in CI) and ``scripts/soak.py`` (a long soak).
"""
from __future__ import annotations

import io
import json
import math
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parents[1]
RERUN_TIMEOUT_MS = 120_000
QUIET_MS = 400  # no new rerun for this long: the page has settled (a page may rerun itself once)

# URL path → sidebar label
PAGES = {"overview": "Lesson", "model_data": "Model & data", "forget": "Forget", "sensitivity": "Sensitivity",
         "importance": "Importance maps", "compare": "Compare methods"}
SLIDERS_ON = {"forget": ("alpha", "lambda"), "sensitivity": ("alpha", "lambda"), "importance": ("alpha",)}
CARDS_ON = ("forget",)  # the Overview is the lesson: its steps have their own test (tests/test_browser_lesson.py)
KIND_LABELS = {"class": "a whole class", "random": "random training images", "images": "images, without labels"}
SOURCE_LABELS = {"test": "test images of one class (labels hidden)", "upload": "images I upload"}
DEFAULT_ALPHA = {"lfssd": 3.5, "ssd": 10.0}  # on digits: LFSSD's 3.5, the SSD paper's 10
CLASSES = (3, 5)  # a few, so that the walk revisits states and their caches
ALPHA_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0,
              7.0, 8.0, 9.0, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0, 60.0, 70.0, 80.0, 100.0)

_WAIT_SETTLED = """([runsBefore, quietMs]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') { window.__walkQuiet = null; return false; }
  if (document.querySelectorAll('[data-stale="true"]').length) { window.__walkQuiet = null; return false; }
  if (document.querySelector('[data-testid="stProgress"], [data-testid="stSkeleton"]')) { window.__walkQuiet = null; return false; }
  if (window.__lfssdRuns <= runsBefore) return false;
  const now = performance.now();
  if (!window.__walkQuiet || window.__walkQuiet.runs !== window.__lfssdRuns) {
    window.__walkQuiet = {runs: window.__lfssdRuns, since: now}; return false;
  }
  return now - window.__walkQuiet.since >= quietMs;
}"""

_SNAPSHOT = """() => {
  const text = e => (e ? e.innerText.trim() : '');
  const sliders = {};
  for (const s of document.querySelectorAll('[data-testid="stSlider"]')) {
    const label = text(s.querySelector('[data-testid="stWidgetLabel"]'));
    const thumb = s.querySelector('input[type=range], [role="slider"]');
    const value = thumb ? (thumb.getAttribute('aria-valuetext') || thumb.getAttribute('aria-valuenow')) : null;
    if (label.startsWith('α')) sliders.alpha = value;
    if (label.startsWith('λ')) sliders.lambda = value;
  }
  const metrics = Array.from(document.querySelectorAll('[data-testid="stMain"] [data-testid="stMetric"]')).map(m => ({
    label: text(m.querySelector('[data-testid="stMetricLabel"]')), value: text(m.querySelector('[data-testid="stMetricValue"]'))}));
  const alerts = Array.from(document.querySelectorAll('[data-testid="stAlert"]')).map(a => ({
    kind: a.querySelector('[data-testid="stAlertContentError"]') ? 'error'
        : a.querySelector('[data-testid="stAlertContentWarning"]') ? 'warning' : 'other', text: text(a)}));
  return {url: location.href, sliders, metrics, alerts,
          exceptions: Array.from(document.querySelectorAll('[data-testid="stException"]')).map(text),
          main: text(document.querySelector('[data-testid="stMain"]')),
          notFound: document.body.innerText.includes('Page not found')};
}"""


def _png(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).resize((32, 32), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def good_files(count: int = 2, offset: int = 0) -> list[dict]:
    """PNGs of digits test images (a 3 and a 5 …), as a user would upload them."""
    from core.data.registry import load_dataset

    digits = load_dataset("digits")
    files = []
    for i in range(count):
        cls = CLASSES[(i + offset) % len(CLASSES)]
        image = digits.test_x[digits.test_y == cls][i + offset, 0].numpy()
        files.append({"name": f"walk_{cls}_{i + offset}.png", "mimeType": "image/png", "buffer": _png(image)})
    return files


BAD_FILES = [{"name": "not_an_image.png", "mimeType": "image/png", "buffer": b"this is text, not a PNG\n" * 4}]


@dataclass
class State:
    """What the walk expects the app to show."""

    page: str = "forget"
    kind: str = "class"
    cls: int = 3
    n: int = 50
    seed: int = 0
    source: str = "test"
    image_cls: int = 3
    uploads: tuple = ()  # ((name, bytes), …) of the current upload, good and bad
    alpha: float = 3.5
    lambda_: float = 1.0
    method: str = "lfssd"
    mode: str = "batch"
    alpha_memory: dict = field(default_factory=dict)  # each method keeps its own α

    @property
    def target(self) -> str:
        if self.kind == "class":
            return f"class:{self.cls}"
        if self.kind == "random":
            return f"random:{self.n}:{self.seed}"
        return "images:upload" if self.source == "upload" else f"images:test:{self.image_cls}"

    @property
    def usable_uploads(self) -> tuple:
        return tuple((name, data) for name, data in self.uploads if not name.startswith("not_an_image"))

    def bad_input(self) -> str | None:
        """Why this state genuinely cannot be shown (an error is then right), else None. An empty
        uploader is no mistake: the page asks for images first."""
        if self.waiting_for_upload():
            return None
        if self.kind == "images" and self.method == "ssd":
            return "SSD needs labels"
        if self.target == "images:upload" and self.uploads and not self.usable_uploads:
            return "no usable images"
        return None

    def waiting_for_upload(self) -> bool:
        return self.target == "images:upload" and not self.uploads


def alpha_options(alpha: float) -> list[float]:
    return sorted({*ALPHA_GRID, alpha})


def fmt(value: float) -> str:
    """Python's ``:g``, as the app writes α and λ into the URL."""
    return f"{value:g}"


class Engine:
    """What the engine computes for a state: ``prepare`` + ``forget``, as ``python -m core forget``."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self._prepared: dict = {}

    def prepared(self, state: State):
        import torch

        from core.cache import TensorCache
        from core.data.registry import load_dataset
        from core.experiment import ExperimentConfig, prepare
        from core.data.images import decode_images

        key = (state.target, state.method, state.mode, state.usable_uploads)
        if key not in self._prepared:
            torch.set_num_threads(1)
            config = ExperimentConfig(dataset="digits", model="small_cnn", forget=state.target, kind=state.method,
                                      mode=state.mode)
            cache = TensorCache(self.cache_dir)
            if state.target == "images:upload":
                data = load_dataset("digits")
                images, names, _ = decode_images(list(state.usable_uploads), data.image_shape, data.dark_background,
                                                 digit_box=data.digit_box)
                config = replace(config, forget="images:walk")
                self._prepared[key] = prepare(config, cache, forget_images=images, forget_names=names)
            else:
                self._prepared[key] = prepare(config, cache)
        return self._prepared[key]

    def cards(self, state: State) -> dict[str, str]:
        """label prefix → the value text a card must show."""
        from core.experiment import forget

        prep = self.prepared(state)
        result = forget(prep, state.alpha, state.lambda_)
        r = result.result
        cards = {"D_r accuracy": f"{r.d_r:.1f} %", "test accuracy": f"{r.test:.1f} %",
                 "D_f accuracy": "—" if r.d_f is None else f"{r.d_f:.1f} %",
                 "MIA": "—" if r.mia is None else f"{r.mia:.1f}",
                 "parameters dampened": f"{result.report.fraction * 100:.2f} %"}
        if not prep.split.labelled:  # D_r is the whole test split: one card, "test accuracy"
            del cards["D_r accuracy"]
        return cards


@dataclass
class Step:
    number: int
    action: str
    state: State
    seconds: float


class WalkFailure(AssertionError):
    pass


@dataclass
class Walk:
    """One seeded walk over one browser; ``run(steps)`` raises ``WalkFailure`` with the trail."""

    browser: object
    base_url: str
    engine: Engine
    seed: int
    screenshot_dir: Path | None = None
    log: list = field(default_factory=list)

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.state = State()
        self.history: list[str] = []  # pages visited, for back/forward
        self.future: list[str] = []
        self.context = None
        self.page = None
        self.visited_states: dict = {}
        self.requests = 0  # every request the pages made
        self.outside: list[str] = []  # those that left 127.0.0.1 (a classroom may have no internet)

    # --- browser plumbing ----------------------------------------------------------------------

    def _new_page(self, url: str) -> None:
        from tests.conftest import app_context

        if self.context is not None:
            self.context.close()
        self.context = app_context(self.browser)
        self.context.on("request", self._record_request)
        self.page = self.context.new_page()
        self.page.set_default_timeout(RERUN_TIMEOUT_MS)
        self.page.goto(url)
        self._settle(0)

    def _record_request(self, request) -> None:
        self.requests += 1
        host = urlparse(request.url).hostname
        if request.url.split(":", 1)[0] in ("http", "https", "ws", "wss") and host != "127.0.0.1":
            self.outside.append(request.url)

    def _runs(self) -> int:
        return self.page.evaluate("() => window.__lfssdRuns || 0")

    def _settle(self, runs_before: int, timeout_ms: int = RERUN_TIMEOUT_MS) -> None:
        self.page.wait_for_function(_WAIT_SETTLED, arg=[runs_before, QUIET_MS], timeout=timeout_ms)

    def _act(self, action, rerun: bool = True) -> None:
        """Do ``action`` and wait until the app has settled (a rerun finished, then quiet)."""
        before = self._runs()
        action()
        if rerun:
            self._settle(before)
        else:
            self.page.wait_for_timeout(QUIET_MS)
            self._settle(-1)

    def _load(self, action) -> None:
        """A navigation that reloads the page: the rerun counter starts again at 0."""
        action()
        self._settle(0)

    @property
    def sidebar(self):
        return self.page.get_by_test_id("stSidebar")

    def _radio(self, label: str, option: str) -> None:
        group = self.sidebar.get_by_test_id("stRadio").filter(has_text=label)
        self._act(lambda: group.get_by_text(option, exact=True).click())

    def _select(self, label: str, option: str) -> None:
        """As a user does: scroll the box into view first (a select box opened while the sidebar
        scrolls closes again), open it, pick the option."""
        box = self.sidebar.get_by_test_id("stSelectbox").filter(has_text=label)
        box.scroll_into_view_if_needed()
        field = box.locator("input")
        for _ in range(3):
            if field.get_attribute("aria-expanded") == "true":
                break
            field.click()
            self.page.wait_for_timeout(150)
        self._act(lambda: self.page.get_by_role("option", name=option, exact=True).click())

    # --- actions: each changes the app and the model the same way --------------------------------

    def nav(self) -> str:
        page = self.rng.choice([p for p in PAGES if p != self.state.page])
        self._act(lambda: self.page.get_by_test_id("stSidebarNav").get_by_text(PAGES[page], exact=True).click())
        self._moved_to(page)
        return f"nav → {page}"

    def link(self) -> str | None:
        if self.state.page != "overview":
            return None
        links = self.page.get_by_test_id("stPageLink")
        if not links.count():  # the lesson's links are on its last step
            return None
        index = self.rng.randrange(links.count())
        target = links.nth(index)
        href = target.locator("a").get_attribute("href") or ""
        page = urlparse(href).path.strip("/").split("/")[-1] or "overview"
        self._act(lambda: target.click())
        self._moved_to(page)
        return f"link → {page}"

    def _moved_to(self, page: str) -> None:
        if page != self.state.page:
            self.history.append(self.state.page)
            self.future.clear()
        self.state.page = page

    def kind(self) -> str:
        kind = self.rng.choice([k for k in KIND_LABELS if k != self.state.kind])
        self._radio("What to forget", KIND_LABELS[kind])
        self.state.kind = kind  # the uploads stay in use (ui.state owns them, not the uploader)
        return f"kind {kind}"

    def cls(self) -> str | None:
        s = self.state
        if s.kind == "class":
            s.cls = self.rng.choice([c for c in CLASSES if c != s.cls])
            self._select("Class", str(s.cls))
            return f"class {s.cls}"
        if s.kind == "images" and s.source == "test":
            s.image_cls = self.rng.choice([c for c in CLASSES if c != s.image_cls])
            self._select("Test images of class", str(s.image_cls))
            return f"image class {s.image_cls}"
        return None

    def source(self) -> str | None:
        if self.state.kind != "images":
            return None
        source = "upload" if self.state.source == "test" else "test"
        self._radio("Images", SOURCE_LABELS[source])
        self.state.source = source
        return f"source {source}"

    def upload(self) -> str | None:
        s = self.state
        if s.target != "images:upload":
            return None
        bad = self.rng.random() < 0.3
        files = BAD_FILES if bad else good_files(self.rng.choice([1, 2]), self.rng.randrange(3))
        chooser = self.sidebar.locator("input[type=file]")
        self._act(lambda: chooser.set_input_files(files=files))
        s.uploads = tuple((f["name"], f["buffer"]) for f in files)
        return f"upload {'bad' if bad else len(files)} file(s)"

    def method(self) -> str:
        s = self.state
        method = "ssd" if s.method == "lfssd" else "lfssd"
        self._radio("Method", method.upper())
        s.alpha_memory[s.method] = s.alpha
        s.alpha = s.alpha_memory.get(method, DEFAULT_ALPHA[method])
        s.method = method
        return f"method {method} (α {fmt(s.alpha)})"

    def mode(self) -> str:
        mode = "sample" if self.state.mode == "batch" else "batch"
        self._radio("Importance mode", mode)
        self.state.mode = mode
        return f"mode {mode}"

    def key(self) -> str | None:
        sliders = SLIDERS_ON.get(self.state.page, ())
        if not sliders or self.state.bad_input() or self.state.waiting_for_upload():
            return None
        which = self.rng.choice(sliders)
        key = self.rng.choice(["ArrowRight", "ArrowLeft", "ArrowRight", "ArrowLeft", "Home", "End"]
                              if which == "alpha" else ["ArrowRight", "ArrowLeft"])
        name = re.compile("^α" if which == "alpha" else "^λ")
        thumb = self.page.get_by_role("slider", name=name)
        s = self.state
        if which == "alpha":
            options = alpha_options(s.alpha)
            i = options.index(s.alpha)
            j = {"ArrowRight": min(i + 1, len(options) - 1), "ArrowLeft": max(i - 1, 0), "Home": 0,
                 "End": len(options) - 1}[key]
            new = options[j]
        else:
            top = max(5.0, s.lambda_)
            new = round(min(max(s.lambda_ + (0.1 if key == "ArrowRight" else -0.1), 0.0), top), 10)
        old = s.alpha if which == "alpha" else s.lambda_
        thumb.focus()
        self._act(lambda: self.page.keyboard.press(key), rerun=not math.isclose(new, old))
        if which == "alpha":
            s.alpha = new
        else:
            s.lambda_ = new
        return f"{which} {key} → {fmt(new)}"

    def back(self) -> str | None:
        """Browser Back moves between pages and never changes the selection: the session owns it and
        the URL is rewritten to it. Which page Back lands on is Streamlit's history (a page switch
        and the URL's query are two entries), so the walk reads the page off the URL."""
        if not self.history:
            return None
        self._act(lambda: self.page.go_back(), rerun=False)
        self.future.append(self.state.page)
        self.state.page = self._path()
        return f"back → {self.state.page}"

    def forward(self) -> str | None:
        if not self.future:
            return None
        self._act(lambda: self.page.go_forward(), rerun=False)
        self.future.pop()
        self.state.page = self._path()
        return f"forward → {self.state.page}"

    def _path(self) -> str:
        return urlparse(self.page.evaluate("location.href")).path.strip("/") or "overview"

    def reload(self) -> str:
        self._load(lambda: self.page.reload())
        self._new_session()
        return "reload"

    def copy_url(self) -> str:
        self._new_page(self.page.evaluate("location.href"))  # a new context: a new session, as a student opening the link
        self._new_session()
        return "open the copied URL"

    def _new_session(self) -> None:
        """A new session keeps what the URL says, and the picker's other fields start at their
        defaults; an upload cannot travel in a URL."""
        s, fresh = self.state, State()
        if s.kind != "class":
            s.cls = fresh.cls
        if s.kind != "random":
            s.n, s.seed = fresh.n, fresh.seed
        if s.kind != "images":
            s.source = fresh.source
        if not (s.kind == "images" and s.source == "test"):
            s.image_cls = fresh.image_cls
        s.uploads = ()
        s.alpha_memory = {}  # the other method's α starts at its default again
        self.history.clear()
        self.future.clear()

    ACTIONS = (("nav", 12), ("link", 3), ("kind", 5), ("cls", 5), ("source", 3), ("upload", 4), ("method", 3),
               ("mode", 2), ("key", 25), ("back", 3), ("forward", 2), ("reload", 2), ("copy_url", 2))

    # --- the invariants --------------------------------------------------------------------------

    def check(self, step: int, action: str) -> None:
        s = self.state
        snap = self.page.evaluate(_SNAPSHOT)
        problems = []
        parsed = urlparse(snap["url"])
        params = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        path = parsed.path.strip("/") or "overview"
        if self.outside:
            problems.append(f"requests beyond 127.0.0.1: {sorted(set(self.outside))[:5]}")
        if snap["exceptions"]:
            problems.append(f"exception on screen: {snap['exceptions']}")
        if snap["notFound"]:
            problems.append("'Page not found'")
        if path != s.page:
            problems.append(f"URL path '{path}', expected '{s.page}'")
        expected = {"alpha": fmt(s.alpha), "lambda": fmt(s.lambda_), "target": s.target, "method": s.method,
                    "mode": s.mode}
        for key, value in expected.items():
            if params.get(key) != value:
                problems.append(f"URL {key}={params.get(key)!r}, expected {value!r}")
        errors = [a["text"] for a in snap["alerts"] if a["kind"] == "error"]
        bad = s.bad_input()
        if errors and bad is None:
            problems.append(f"an error without bad input: {errors}")
        # Compare runs its own methods, not the sidebar's; the lesson's first step is about a class and
        # says so (with a button) for any other target
        lesson_notice = s.page == "overview" and s.kind != "class"
        if bad and not errors and s.page != "compare" and not lesson_notice:
            problems.append(f"bad input ({bad}) but no error shown")
        if lesson_notice and not any("This step is about one digit" in a["text"] for a in snap["alerts"]):
            problems.append("the lesson shows no notice for a target that is not a class")
        if s.waiting_for_upload() and not lesson_notice and not any(
                "Upload one or more images" in a["text"] for a in snap["alerts"]):
            problems.append("an empty uploader, but no prompt to upload")
        replaced = [a["text"] for a in snap["alerts"] if a["kind"] == "warning" and "; using " in a["text"]]
        if replaced:  # the walk only opens URLs the app wrote: nothing in them may be replaced
            problems.append(f"a URL value was replaced: {replaced}")
        shown = not bad and not s.waiting_for_upload()
        for slider in (SLIDERS_ON.get(s.page, ()) if shown else ()):
            value = snap["sliders"].get(slider)
            want = s.alpha if slider == "alpha" else s.lambda_
            if value is None:
                problems.append(f"no {slider} slider on {s.page}")
            elif not math.isclose(float(value.split()[0]), want, rel_tol=1e-9, abs_tol=1e-9):
                problems.append(f"{slider} slider shows {value}, expected {fmt(want)}")
        if shown:
            problems += self._captions(snap["main"])
        if shown and s.page in CARDS_ON:
            problems += self._cards(snap["metrics"])
            if s.page == "forget" and self.rng.random() < 0.25:
                problems += self._report()
        self.visited_states[(s.target, s.method, s.mode, fmt(s.alpha), fmt(s.lambda_))] = replace(
            s, alpha_memory=dict(s.alpha_memory))
        if problems:
            self._fail(step, action, problems)

    def _captions(self, main: str) -> list[str]:
        s = self.state
        patterns = {"forget": [(r"At α = (\S+?):", s.alpha)],
                    "sensitivity": [(r"α sweep at λ = (\S+)", s.lambda_), (r"λ sweep at α = (\S+)", s.alpha)],
                    "importance": [(r"when I_Df > α·I_D \(α = (\S+?)\)", s.alpha)]}.get(s.page, [])
        problems = []
        for pattern, want in patterns:
            match = re.search(pattern, main)
            if match is None:
                problems.append(f"caption /{pattern}/ not on {s.page}")
                continue
            got = tuple(float(g.rstrip(".,)")) for g in match.groups())
            wants = want if isinstance(want, tuple) else (want,)
            if not all(math.isclose(g, w) for g, w in zip(got, wants)):
                problems.append(f"caption /{pattern}/ says {match.group(0)!r}, expected {wants}")
        return problems

    def _cards(self, metrics: list[dict]) -> list[str]:
        expected = self.engine.cards(self.state)
        problems = []
        for prefix, value in expected.items():
            shown = [m["value"] for m in metrics if m["label"].startswith(prefix)]
            if not shown:
                problems.append(f"no '{prefix}' card on {self.state.page}")
            elif shown[0] != value:
                problems.append(f"card '{prefix}' shows {shown[0]!r}, the engine computes {value!r}")
        return problems

    def _report(self) -> list[str]:
        button = self.page.get_by_test_id("stDownloadButton").filter(has_text="Download the report")
        with self.page.expect_download() as download:
            button.click()
        report = json.loads(Path(download.value.path()).read_text())
        s = self.state
        problems = []
        if not (math.isclose(report["alpha"], s.alpha) and math.isclose(report["lambda"], s.lambda_)):
            problems.append(f"report α={report['alpha']}, λ={report['lambda']}; expected {fmt(s.alpha)}, {fmt(s.lambda_)}")
        if report["method"] != s.method or report["mode"] != s.mode:
            problems.append(f"report method/mode {report['method']}/{report['mode']}")
        return problems

    def _fail(self, step: int, action: str, problems: list[str]) -> None:
        shot = ""
        if self.screenshot_dir is not None:
            path = self.screenshot_dir / f"walk_seed{self.seed}_step{step}.png"
            self.page.screenshot(path=str(path))
            shot = f"\nscreenshot: {path}"
        trail = "\n".join(f"  {s.number:4d} {s.action} ({s.seconds:.1f} s)" for s in self.log[-15:])
        raise WalkFailure(f"seed {self.seed}, step {step} ({action}), URL {self.page.url}:\n- "
                          + "\n- ".join(problems) + f"\nlast steps:\n{trail}{shot}")

    # --- the walk --------------------------------------------------------------------------------

    def run(self, steps: int, deadline: float | None = None) -> int:
        """Take up to ``steps`` steps (fewer if ``deadline``, a time.monotonic(), passes); returns
        how many were taken. The first step opens the app on the Forget page."""
        self._new_page(f"{self.base_url.rstrip('/')}/forget")
        self.check(0, "open /forget")
        names, weights = zip(*self.ACTIONS)
        taken = 0
        try:
            while taken < steps and (deadline is None or time.monotonic() < deadline):
                name = self.rng.choices(names, weights)[0]
                started = time.monotonic()
                try:
                    done = getattr(self, name)()
                except WalkFailure:
                    raise
                except Exception as exc:  # a Playwright timeout: say where the walk was
                    self._fail(taken + 1, name, [f"{type(exc).__name__}: {str(exc)[:800]}"])
                if done is None:
                    continue
                taken += 1
                self.log.append(Step(taken, done, replace(self.state, alpha_memory=dict(self.state.alpha_memory)),
                                 time.monotonic() - started))
                self.check(taken, done)
        finally:
            if self.context is not None:
                self.context.close()
        return taken

    def check_cli(self, cache_dir: Path, limit: int = 2) -> None:
        """``python -m core forget --json`` for a few labelled states the walk visited prints the
        numbers the engine gave the cards."""
        states = [s for s in self.visited_states.values() if s.kind != "images"][:limit]
        for s in states:
            env = {"LFSSD_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "PATH": "/usr/bin:/bin"}
            proc = subprocess.run([sys.executable, "-m", "core", "forget", "--forget", s.target, "--kind", s.method,
                                   "--mode", s.mode, "--alpha", fmt(s.alpha), "--lambda", fmt(s.lambda_), "--json"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-2000:]
            out = json.loads(proc.stdout)["forgotten"]
            cards = self.engine.cards(s)
            assert cards["D_r accuracy"] == f"{out['d_r']:.1f} %", (s, out)
            assert cards["test accuracy"] == f"{out['test']:.1f} %", (s, out)
            assert cards["MIA"] == ("—" if out["mia"] is None else f"{out['mia']:.1f}"), (s, out)

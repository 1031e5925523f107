"""The built book as a reader meets it: every page in headless Chromium (issue: the built book).

Needs the built HTML (``make test`` builds the book before running this file; ``make book`` too)
and Debian's ``chromium`` + ``chromium-driver`` (``make test`` installs them when run as root).
Where either is missing the tests skip and say why.
"""

import functools
import http.server
import json
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _toc_pages():
    """Chapter pages listed in _toc.yml, as paths relative to the book root without suffix."""
    text = (ROOT / "_toc.yml").read_text()
    return re.findall(r"(?:root|file):\s*([\w/.-]+)", text)


def _chapters_with_music():
    """Chapters whose notebook renders audio players (they call pianolab's player functions)."""
    out = []
    for page in _toc_pages():
        nb = ROOT / f"{page}.ipynb"
        if nb.exists():
            cells = json.loads(nb.read_text())["cells"]
            src = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
            if re.search(r"\b(player|player_grid)\(", src):
                out.append(page)
    return out


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.skip(f"the book is not built ({HTML} has no index.html): run `make book` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs "
                    "them when run as root)")
    profile = tempfile.mkdtemp(prefix="pianolab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600", f"--user-data-dir={profile}",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(120)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url):
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (document.readyState === 'complete') done(); else addEventListener('load', () => done());"
    )
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_every_page_loads_without_console_errors(server, browser):
    pages = ["index"] + [p for p in _toc_pages()]
    seen = 0
    for page in dict.fromkeys(pages):
        path = HTML / f"{page}.html"
        if page != "index":
            assert path.exists(), f"{page} is in _toc.yml but {path} was not built"
        errors = _open(browser, f"{server}/{page}.html")
        assert errors == [], f"{page}.html: console errors: {errors}"
        seen += 1
    assert seen >= 2


def test_every_chapter_page_carries_the_outputs_of_its_cells(server):
    """The built chapters show what their cells printed and drew (make test renders the notebooks
    nbval executed, make book executes them): a page built from the stored, output-free
    notebooks would have none."""
    for page in _toc_pages():
        nb = ROOT / f"{page}.ipynb"
        if nb.exists():
            html = (HTML / f"{page}.html").read_text()
            assert html.count('class="cell_output') >= 3, f"{page}.html shows (almost) no cell outputs"


def test_launch_buttons_open_the_repository_of_config(server):
    """The Colab button of a chapter points at the notebook in the repository of _config.yml,
    the same one the chapter's installer cell installs from (tests/test_packaging.py)."""
    yaml = pytest.importorskip("yaml")
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    slug = repo["url"].rstrip("/").removeprefix("https://github.com/")
    page = next(p for p in _toc_pages() if (ROOT / f"{p}.ipynb").exists())
    html = (HTML / f"{page}.html").read_text()
    colab = f"https://colab.research.google.com/github/{slug}/blob/{repo.get('branch', 'main')}/{page}.ipynb"
    assert colab in html, f"{page}.html has no launch button to {colab}"


DECODE_AUDIO = """
const done = arguments[arguments.length - 1];
const ctx = new OfflineAudioContext(1, 1, 22050);
const srcs = [...document.querySelectorAll('audio')].map(
  a => a.currentSrc || a.src || (a.querySelector('source') || {}).src || '');
Promise.all(srcs.map(s => fetch(s).then(r => r.arrayBuffer())
  .then(b => ctx.decodeAudioData(b)).then(buf => buf.duration)
  .catch(e => 'error: ' + e))).then(done);
"""


def test_chapters_with_music_have_decodable_audio(server, browser):
    chapters = _chapters_with_music()
    assert chapters, "no chapter renders audio players"
    for page in chapters:
        _open(browser, f"{server}/{page}.html")
        durations = browser.execute_async_script(DECODE_AUDIO)
        assert durations, f"{page}.html has no <audio> elements"
        bad = [d for d in durations if not isinstance(d, (int, float)) or d <= 0.5]
        assert not bad, f"{page}.html: audio that does not decode to sound: {bad}"


def test_two_pages_saved_as_screenshots(server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = ["index", _chapters_with_music()[0]]
    for page in pages:
        _open(browser, f"{server}/{page}.html")
        out = SCREENSHOTS / f"{Path(page).name}.png"
        assert browser.save_screenshot(str(out)), f"could not save {out}"
        assert out.stat().st_size > 10_000, f"{out} is suspiciously small"


# ---------------------------------------------------------------- the in-page generator
# These tests need no built book: the page's JavaScript (book/_static/web) and the weights,
# exported now as the book build exports them (book/_ext/pianolab_web.py), are served from a
# temporary folder with a small test page.

STATIC = ROOT / "book" / "_static" / "web"
WEB_MODELS = ("deep", "shallow", "pianonet_micro_1", "pianonet_r5p3")
EXACT_SECONDS = 10.0  # of music compared state for state with pianolab's FastSampler
PROB_TOL = 1e-5
TEST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>pianolab page test</title></head><body>
<div class="pianolab-generator" data-seeds='{"chords": {"steps": 96, "notes": [[60, 0, 20], [64, 0, 20],
 [67, 0, 20], [65, 24, 44], [69, 24, 44], [72, 24, 44], [67, 48, 68], [71, 48, 68], [74, 48, 68],
 [60, 72, 92], [64, 72, 92], [67, 72, 92]]}}'></div>
PLAYERS
<script src="web/sampler.js"></script><script src="web/synth.js"></script>
<script src="web/roll.js"></script><script src="web/generator.js"></script></body></html>"""


def _players_html():
    """A player of a seed + continuation (the first 24 steps seed) and a grid of two, as pianolab writes them."""
    import numpy as np

    from pianolab import audio
    roll = np.zeros((96, 72), np.uint8)
    roll[0:20, 29] = roll[24:60, 33] = roll[30:90, 36] = 1
    grid = audio.player_grid({"a": roll, "b": roll[::-1], "a waveform": np.zeros(8000, np.float32)}, max_seconds=1.5)
    return audio.player(roll, seed_steps=24)._repr_html_() + grid.data


def _web():
    import sys
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import pianolab_web
    return pianolab_web


@pytest.fixture(scope="module")
def page(browser):
    """URL of the test page, served with the page's scripts and freshly exported weights."""
    site = Path(tempfile.mkdtemp(prefix="pianolab-page-"))
    shutil.copytree(STATIC, site / "web")
    _web().export_all(site / "web" / "weights", WEB_MODELS)
    (site / "test.html").write_text(TEST_PAGE.replace("PLAYERS", _players_html()))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/test.html"
    httpd.shutdown()
    shutil.rmtree(site, ignore_errors=True)


def _chord_seed(encoding):
    """2 s of four chords in a model's key window (the test page's "chords" seed)."""
    import numpy as np
    roll = np.zeros((96, encoding.n_keys), np.uint8)
    for i, chord in enumerate([(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)]):
        for p in chord:
            roll[24 * i:24 * i + 20, p - encoding.lowest] = 1
    return roll


RUN_SAMPLER = """
const [name, seed, u, forced, simd, done] = arguments;
const S = PianolabSampler;
S.fetchNet(new URL('web/weights/', location.href), name, {simd}).then(net => {
  if (simd && !net.simd) throw new Error('this browser has no WebAssembly SIMD');
  const s = S.start(net, S.seedHistory(net, seed));
  const probs = new Float64Array(u.length), t0 = performance.now();
  const states = S.run(net, s, u.length, {u: Float64Array.from(u), probs,
                                          forced: forced && Uint8Array.from(forced)});
  done({ms: performance.now() - t0, states: Array.from(states).join(''), probs: Array.from(probs)});
}).catch(e => done({error: String(e)}));
"""


@pytest.mark.parametrize("name, simd", [(m, True) for m in WEB_MODELS] + [("pianonet_micro_1", False)])
def test_page_sampler_plays_pianolabs_key_states(page, browser, name, simd):
    """Fed the uniforms pianolab's FastSampler draws (numpy's default_rng([3, 0])), the page's
    sampler (its WebAssembly SIMD layers, and for one model its plain JavaScript loop, the one
    browsers without SIMD run) plays the same key states for 10 s of music after the same seed, with probabilities
    within 1e-5 of pianolab's given the same history. Where a uniform lies within 1e-5 of the
    probability it is compared with, the two may rightly differ: the test says so, compares the
    states up to there and the probabilities over pianolab's whole history (teacher forcing)."""
    import warnings

    import numpy as np

    from pianolab.encoding import EDGE_THRESHOLDS
    from pianolab.generate import FastSampler
    from pianolab.runs import encoding_of, load_model

    enc = encoding_of(name)
    K, n_steps, seed = enc.n_keys, int(EXACT_SECONDS * enc.steps_per_second), _chord_seed(enc)
    rolls, probs = FastSampler(load_model(name), n_keys=K).sample(seed, n_steps, random_seed=3,
                                                                   return_probabilities=True)
    want, p_want = rolls[0].reshape(-1), probs[0].reshape(-1)
    u = np.random.default_rng([3, 0]).random(want.size)
    _open(browser, page)
    got = browser.execute_async_script(RUN_SAMPLER, name, seed.tolist(), u.tolist(), None, simd)
    assert "error" not in got, got
    states = np.frombuffer(got["states"].encode(), np.uint8) - ord("0")
    thr = np.float32(EDGE_THRESHOLDS[: (K + 1) // 2])  # PianoNet's rule: a key near an edge needs p >= thr
    dist = np.minimum(np.arange(want.size) % K, K - 1 - np.arange(want.size) % K)
    q = np.where((dist < thr.size) & (p_want < thr[np.minimum(dist, thr.size - 1)]), 0.0, p_want)
    ties = np.flatnonzero(np.abs(u - q) < PROB_TOL)
    differ = np.flatnonzero(states != want)
    end = differ[0] if differ.size else want.size
    if differ.size:
        assert ties.size and ties[0] <= end, (
            f"{name}: the page plays state {end} (time step {end // K}, key {end % K}) as {states[end]}, "
            f"pianolab as {want[end]}, with u = {u[end]:.7f} and p = {q[end]:.7f}: not a near tie")
        warnings.warn(f"{name}: uniform {ties[0]} lies within {PROB_TOL} of its probability; the "
                      f"states are compared up to state {end} of {want.size}, then teacher-forced")
        got = browser.execute_async_script(RUN_SAMPLER, name, seed.tolist(), u.tolist(), want.tolist(), simd)
    elif ties.size:
        print(f"{name}: {ties.size} uniform(s) within {PROB_TOL} of their probability; states equal anyway")
    err = np.max(np.abs(np.array(got["probs"]) - p_want))
    print(f"{name} ({'WebAssembly SIMD' if simd else 'plain JS'}): {want.size} key states ({int(want.sum())} down), {end} equal; largest probability "
          f"difference {err:.2e}; page sampler {want.size / got['ms'] * 1000:,.0f} key states/s")
    assert err <= PROB_TOL, f"{name}: probabilities differ from pianolab's by up to {err:.3g}"
    assert want.sum() > 0, f"{name}: 10 s of silence prove little; pick another seed"


SYNTH_TOL = 1e-6


def test_page_piano_sounds_like_pianolabs_numpy_piano(page, browser):
    """The page's synthesiser renders a test roll equal to pianolab.audio's numpy piano (same
    formula, both float32 at the end) within 1e-6 (of a peak of 0.9)."""
    import numpy as np

    from pianolab import audio
    from pianolab.encoding import DEFAULT_ENCODING

    rng = np.random.default_rng(0)
    roll = np.zeros((150, DEFAULT_ENCODING.n_keys), np.uint8)
    for _ in range(25):  # notes of random keys and lengths, some re-struck and overlapping
        k, s = rng.integers(0, roll.shape[1]), rng.integers(0, 140)
        roll[s:s + rng.integers(1, 60), k] = 1
    want = audio.synthesize(roll, backend_name="numpy")
    _open(browser, page)
    got = browser.execute_script("return Array.from(PianolabSynth.render(arguments[0], arguments[1]))",
                                 roll.tolist(), DEFAULT_ENCODING.to_dict())
    got = np.asarray(got, np.float32)
    assert got.shape == want.shape
    err = float(np.max(np.abs(got - want)))
    print(f"page piano vs numpy piano: {want.size} samples, largest difference {err:.2e}")
    assert err <= SYNTH_TOL


GENERATE = """
const [done] = arguments;
const div = document.querySelector('div.pianolab-generator');
const wait = () => {
  if (!div.generator) return setTimeout(wait, 50);
  const before = div.dataset.done;
  div.querySelector('button').click();  // Generate
  const poll = () => div.dataset.done !== before ? setTimeout(() => done({
      rows: div.generator.performance().map(r => Array.from(r)),
      midi: btoa(String.fromCharCode(...div.generator.midi())),
      status: div.textContent, hash: location.hash, cursor: div.generator.cursor()}), 500) : setTimeout(poll, 50);
  poll();
};
wait();
"""


def test_generator_saves_the_roll_it_drew_and_repeats_from_the_url(page, browser, tmp_path):
    """The generator of the page, run from its URL's settings (a seed passage, 3 s, temperature 1.1):
    it plays what it drew (the cursor moves); the .mid it saves reads back with
    pianolab.encoding.load_midi as the roll it drew; the same URL gives the same performance again;
    no console error."""
    import base64

    import numpy as np

    from pianolab.encoding import load_midi, midi_to_roll
    from pianolab.runs import encoding_of

    url = f"{page}#model=pianonet_micro_1&seed=chords&seconds=3&temperature=1.1&edge=1&rs=2"
    runs = []
    for _ in range(2):
        browser.get("about:blank")  # a new page, not a jump to another #hash of the same one
        assert _open(browser, url) == []
        runs.append(browser.execute_async_script(GENERATE))
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    rows = np.array(runs[0]["rows"], np.uint8)
    assert rows.shape == (3 * 48, 72) and rows.sum() > 0, runs[0]["status"]
    assert runs[0]["rows"] == runs[1]["rows"], "the same URL played another performance"
    path = tmp_path / "performance.mid"
    path.write_bytes(base64.b64decode(runs[0]["midi"]))
    back = midi_to_roll(load_midi(path), encoding_of("pianonet_micro_1"))
    assert np.array_equal(back, rows)
    assert "key states/s" in runs[0]["status"]
    assert all(run["cursor"] and run["cursor"] > 0.1 for run in runs), "the performance did not play"


PLAY = """
const done = arguments[0];
const divs = [...document.querySelectorAll('div.pianolab-roll')];
const audio = divs[0].parentElement.querySelector('audio'), roll = divs[0].roll;
const canvas = divs[0].querySelector('canvas'), box = canvas.getBoundingClientRect();
audio.muted = true;
audio.play().then(() => setTimeout(() => {
  audio.pause();
  const played = roll.cursor;
  canvas.dispatchEvent(new MouseEvent('click', {clientX: box.left + box.width / 2, clientY: box.top + 5}));
  done({rolls: divs.map(d => d.roll ? d.roll.allNotes().length : -1), seed: roll.seedSteps, played,
        seeked: audio.currentTime, width: roll.width() / roll.encoding.steps_per_second});
}, 600)).catch(e => done({error: String(e)}));
"""


def test_players_show_their_roll_and_its_cursor_follows_the_sound(page, browser):
    """Under every player of a roll (pianolab.audio.player, player_grid), its roll: the notes it plays, the
    seed's steps marked; the cursor moves while the audio plays and a click on the roll seeks there."""
    assert _open(browser, page) == []
    got = browser.execute_async_script(PLAY)
    assert "error" not in got, got
    assert got["rolls"] == [3, 3, 2], got  # 3 notes; the grid cuts at 1.5 s (one note of "b" is later); no roll for a waveform
    assert got["seed"] == 24
    assert 0.2 < got["played"] < 1.5, f"the cursor did not follow the sound: {got}"
    assert abs(got["seeked"] - got["width"] / 2) < 0.05, got


BUILT_PAGE = """
const done = arguments[0];
const ready = () => [...document.querySelectorAll('div.pianolab-generator')].every(g => g.generator);
const poll = (n) => (ready() || n > 100) ? done({
  rolls: [...document.querySelectorAll('div.pianolab-roll')].map(d => d.roll ? d.roll.allNotes().length : -1),
  generators: [...document.querySelectorAll('div.pianolab-generator')].map(g =>
    [...g.querySelectorAll('select')].map(s => [...s.options].map(o => o.value)))}) : setTimeout(() => poll(n + 1), 50);
poll(0);
"""


def test_built_pages_draw_every_roll_and_offer_the_generator(server, browser):
    """In the built book, roll.js drew the roll under every player of a roll (with its notes), and the
    intro and chapter 5 offer the generator: the four shipped models, silence and held-out passages."""
    found = {"rolls": 0, "generators": 0}
    for page in _toc_pages():
        path = HTML / f"{page}.html"
        if not path.exists() or not re.search(r"pianolab-(roll|generator)", path.read_text()):
            continue
        assert _open(browser, f"{server}/{page}.html") == []
        got = browser.execute_async_script(BUILT_PAGE)
        assert all(n > 0 for n in got["rolls"]), f"{page}.html: a roll that was not drawn, or is empty: {got['rolls']}"
        for models, seeds in got["generators"]:
            assert models == list(WEB_MODELS) and seeds[0] == "silence" and len(seeds) >= 3, (page, models, seeds)
        found["rolls"] += len(got["rolls"])
        found["generators"] += len(got["generators"])
    assert found["rolls"] > 0 and found["generators"] > 0, found


@pytest.mark.parametrize("name", ["deep", "pianonet_r5p3"])
def test_weights_for_the_page_are_the_samplers(name, tmp_path):
    """NAME.bin read back at NAME.json's offsets holds exactly the weights FastSampler runs (read_layers),
    and the JSON the encoding, receptive field and edge thresholds pianolab.generate uses (no browser)."""
    import numpy as np

    from pianolab.encoding import EDGE_THRESHOLDS
    from pianolab.generate import read_layers
    from pianolab.runs import encoding_of, load_model

    desc = _web().export(name, tmp_path)
    data = np.fromfile(tmp_path / desc["bin"], "<f4")
    assert data.size * 4 == desc["bytes"] == (tmp_path / desc["bin"]).stat().st_size
    layers, w_out, b_out = read_layers(load_model(name))
    at = lambda offset, shape: data[offset // 4: offset // 4 + int(np.prod(shape))].reshape(shape)  # noqa: E731
    assert len(desc["layers"]) == len(layers)
    for lay, d in zip(layers, desc["layers"]):
        assert (d["dilation"], d["activation"], d["kernel_shape"]) == (lay.dilation, lay.activation, list(lay.kernel.shape))
        assert np.array_equal(at(d["kernel_offset"], lay.kernel.shape), lay.kernel)
        assert np.array_equal(at(d["bias_offset"], lay.bias.shape), lay.bias)
    assert np.array_equal(at(desc["output"]["weights_offset"], w_out.shape), w_out)
    assert at(desc["output"]["bias_offset"], (1,))[0] == np.float32(b_out)
    enc = encoding_of(name)
    assert desc["encoding"] == enc.to_dict() and desc["receptive_field"] == 1 + sum(lay.dilation for lay in layers)
    assert np.array_equal(np.float32(desc["edge_thresholds"]), np.float32(EDGE_THRESHOLDS[: (enc.n_keys + 1) // 2]))

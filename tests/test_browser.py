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

"""Generation speed in the page: the book's JavaScript sampler in headless Chromium, per shipped model,
beside pianolab's numba sampler measured in the same run.

For each model the page offers (``book/_ext/pianolab_web.MODELS``), the weights are exported as the
book build exports them, served with ``book/_static/web`` and a blank page, and the page's Web
Worker (``sampler.js``, exactly as the generator runs it) plays ``SECONDS`` of music from silence,
one stream; the time counted is from the first key state to the last (the seed pass and the weight
download are not), the best of ``REPEATS`` runs (the machine may be shared). The numba sampler
(``FastSampler``, one stream) plays the same length after a warm-up, best of ``REPEATS`` too. The
page says which engine ran its layers: WebAssembly SIMD, or plain JavaScript where SIMD is missing. Real-time factor = seconds of music per second of wall-clock time. Needs Debian's
``chromium`` and ``chromium-driver`` and selenium. Last line:
``browser_realtime deep=.. shallow=.. pianonet_micro_1=.. pianonet_r5p3=.. numba_deep=..``
Goal: deep >= 2 in the page. With ``--record`` the figures, the CPU, the browser and the
date are also written to ``benchmarks/browser_generation.json`` (chapter 5 reads them from there).
"""

import datetime
import functools
import http.server
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "book" / "_ext"), str(ROOT / "benchmarks")]

import pianolab_web  # noqa: E402
from generation import cpu  # noqa: E402

RECORD = ROOT / "benchmarks" / "browser_generation.json"
SECONDS = 10.0
REPEATS = 2
WORKER = """
const [model, steps, done] = arguments;
const worker = new Worker('web/sampler.js');
let simd = null;
worker.onmessage = ({data: m}) => {
  if (m.type === 'start') simd = m.simd;
  if (m.type === 'done') { worker.terminate(); done({seconds: m.seconds, simd}); }
  if (m.type === 'error') done({error: m.message});
};
worker.postMessage({cmd: 'generate', base: new URL('web/weights/', location.href).href, model, seed: null,
                    steps, temperature: 1, edgeAversion: true, randomSeed: 0});
"""


def serve(folder):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def chromium():
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(
        executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    driver.set_script_timeout(600)
    return driver


def numba_realtime(name, seconds):
    from pianolab.generate import FastSampler
    from pianolab.runs import encoding_of, load_model
    enc = encoding_of(name)
    sampler = FastSampler(load_model(name), n_keys=enc.n_keys)
    sampler.sample(None, 4)  # compile / warm up
    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        sampler.sample(None, int(seconds * enc.steps_per_second), random_seed=0)
        best = min(best, time.perf_counter() - t)
    return seconds / best


def main():
    print(f"CPU: {cpu()}; {SECONDS:g} s of music per model, one stream, from silence")
    record = {"cpu": cpu(), "date": datetime.date.today().isoformat(), "seconds_of_music": SECONDS,
              "repeats": REPEATS, "states_per_second": {}, "engine": {}}
    site = Path(tempfile.mkdtemp(prefix="pianolab-bench-"))
    shutil.copytree(ROOT / "book" / "_static" / "web", site / "web")
    index = pianolab_web.export_all(site / "web" / "weights")
    (site / "bench.html").write_text('<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><p>bench</p>')
    httpd, driver = serve(site), chromium()
    try:
        driver.get(f"http://127.0.0.1:{httpd.server_address[1]}/bench.html")
        record["browser"] = f"Chromium {driver.capabilities.get('browserVersion', '?')} (headless)"
        print(record["browser"])
        realtime = {}
        for entry in index:
            name, fs = entry["name"], entry["encoding"]["steps_per_second"]
            runs = [driver.execute_async_script(WORKER, name, int(SECONDS * fs)) for _ in range(REPEATS)]
            if any("error" in got for got in runs):
                raise RuntimeError(f"{name}: {runs}")
            best = min(got["seconds"] for got in runs)
            realtime[name] = SECONDS / best
            rate = SECONDS * fs * entry["encoding"]["n_keys"] / best
            record["states_per_second"][name] = round(rate)
            record["engine"][name] = "WebAssembly SIMD" if runs[0]["simd"] else "plain JavaScript"
            print(f"page {name:18s} {entry['parameters']:>8,} weights: {rate:8,.0f} key states/s = "
                  f"{realtime[name]:.2f} x real time ({'WebAssembly SIMD' if runs[0]['simd'] else 'plain JS'})")
    finally:
        driver.quit()
        httpd.shutdown()
        shutil.rmtree(site, ignore_errors=True)
    realtime["numba_deep"] = numba_realtime("deep", SECONDS)
    print(f"numba deep: {realtime['numba_deep']:.2f} x real time")
    record["realtime"] = {k: round(v, 2) for k, v in realtime.items()}
    if "--record" in sys.argv:
        from pianolab._io import write_bytes
        write_bytes(RECORD, (json.dumps(record, indent=1) + "\n").encode())
        print(f"written to {RECORD.relative_to(ROOT)}")
    print("browser_realtime " + " ".join(f"{k}={v:.2f}" for k, v in realtime.items()))


if __name__ == "__main__":
    main()

// The in-page generator: pick a shipped model, a seed, seconds, temperature, edge aversion and a
// random seed; Generate runs the Fast-WaveNet sampler (sampler.js) in a Web Worker, draws the roll
// as the key states arrive (roll.js), then plays it with the page's piano (synth.js) and the roll's
// cursor (Play / Stop, or a click on the roll, to hear it again from there); Save .mid
// writes the performance as a MIDI file. The settings live in the page's URL (#model=deep&seed=...):
// the same URL generates the same performance again.
//
// Markup: <div class="pianolab-generator" data-seeds='{"label": {"steps": T, "notes": [[midi pitch,
// first step, end step], ...]}}'></div>; weights come from _static/web/weights/ (written at
// book build time by book/_ext/pianolab_web.py), only the chosen model's.
"use strict";

const PianolabGenerator = (() => {
  const BASE = new URL(".", document.currentScript ? document.currentScript.src : location.href);
  const DEFAULTS = { model: "deep", seed: "silence", seconds: 10, temperature: 1, edge: 1, rs: 0 };

  // A roll -> the bytes of a standard MIDI file as pianolab.encoding.roll_to_midi writes it: 480
  // ticks per beat at 120 bpm (960 ticks/s), velocity 80, a pedal-up event at the roll's end.
  function midiBytes(roll, encoding) {
    const fs = encoding.steps_per_second, tick = (step) => Math.round((step * 960) / fs), events = [];
    const K = encoding.n_keys, T = roll.length;
    for (let k = 0; k < K; k++) {
      let s = -1;
      for (let t = 0; t <= T; t++) {
        const on = t < T && roll[t][k];
        if (on && s < 0) s = t;
        else if (!on && s >= 0) {
          events.push([tick(s), 1, [0x90, encoding.lowest + k, 80]], [tick(t), 0, [0x80, encoding.lowest + k, 0]]);
          s = -1;
        }
      }
    }
    events.push([tick(T), 2, [0xb0, 64, 0]]);
    events.sort((a, b) => a[0] - b[0] || a[1] - b[1]); // note-offs first at a tick
    const track = [0x00, 0xff, 0x51, 0x03, 0x07, 0xa1, 0x20, 0x00, 0xc0, 0x00]; // tempo 500,000 us/beat; piano
    let now = 0;
    for (const [at, , bytes] of events) {
      let delta = at - now, vlq = [delta & 0x7f];
      now = at;
      while ((delta >>= 7) > 0) vlq.unshift((delta & 0x7f) | 0x80);
      track.push(...vlq, ...bytes);
    }
    track.push(0x00, 0xff, 0x2f, 0x00);
    const n = track.length;
    return new Uint8Array([0x4d, 0x54, 0x68, 0x64, 0, 0, 0, 6, 0, 0, 0, 1, 0x01, 0xe0, // MThd, format 0, 480
                           0x4d, 0x54, 0x72, 0x6b, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255, ...track]);
  }

  function readHash() {
    const out = { ...DEFAULTS };
    for (const [k, v] of new URLSearchParams(location.hash.slice(1))) if (k in out) out[k] = k === "model" || k === "seed" ? v : Number(v);
    return out;
  }

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, attrs);
    e.append(...children);
    return e;
  }

  async function build(div) {
    const seeds = JSON.parse(div.dataset.seeds || "{}");
    const models = await (await fetch(new URL("weights/index.json", BASE))).json();
    const s = readHash();
    const field = (label, input) => el("label", { style: "margin-right:12px;white-space:nowrap" }, label + " ", input);
    const model = el("select", {}, ...models.map((m) => el("option", { value: m.name, selected: m.name === s.model },
      `${m.name} (${m.parameters.toLocaleString("en")} weights)`)));
    const seed = el("select", {}, el("option", { value: "silence" }, "silence"),
      ...Object.keys(seeds).map((name) => el("option", { value: name, selected: name === s.seed }, name)));
    const seconds = el("input", { type: "number", min: 1, max: 60, step: 1, value: s.seconds, style: "width:4em" });
    const temperature = el("input", { type: "number", min: 0.1, max: 5, step: 0.05, value: s.temperature, style: "width:4.5em" });
    const edge = el("input", { type: "checkbox", checked: !!s.edge });
    const rs = el("input", { type: "number", min: 0, step: 1, value: s.rs, style: "width:6em" });
    const go = el("button", { type: "button" }, "Generate"), play = el("button", { type: "button", disabled: true }, "Play");
    const save = el("button", { type: "button", disabled: true }, "Save .mid"), status = el("span", { style: "margin-left:8px" });
    const canvas = el("canvas", { style: "width:100%;height:140px;display:block;cursor:pointer;border:1px solid #ddd;margin-top:6px" });
    div.append(el("div", {}, field("model", model), field("seed", seed), field("seconds", seconds),
      field("temperature", temperature), field("edge aversion", edge), field("random seed", rs)),
    el("div", { style: "margin-top:6px" }, go, play, save, status), canvas);

    let worker = null, roll = null, rows = [], enc = null, sound = null, seedRows = 0, engine = "";
    const settings = () => ({ model: model.value, seed: seed.value, seconds: Math.min(60, Math.max(1, Math.round(+seconds.value || 10))),
      temperature: Math.min(5, Math.max(0.05, +temperature.value || 1)), edge: edge.checked ? 1 : 0, rs: Math.max(0, Math.trunc(+rs.value || 0)) });
    let audioCtx = null; // made on a click, so that it may play when the performance is ready
    const context = () => audioCtx || (audioCtx = new AudioContext());
    const stop = () => { if (sound) { sound.source.stop(); sound = null; play.textContent = "Play"; } };
    const performance_ = () => rows.slice(seedRows); // the generated steps only

    go.onclick = () => {
      stop();
      context();
      const cfg = settings();
      history.replaceState(null, "", "#" + new URLSearchParams(cfg).toString());
      if (worker) worker.terminate();
      worker = new Worker(new URL("sampler.js", BASE));
      const seedSpec = cfg.seed === "silence" ? null : seeds[cfg.seed];
      const steps = Math.round(cfg.seconds * models.find((m) => m.name === cfg.model).encoding.steps_per_second);
      rows = []; play.disabled = save.disabled = true; status.textContent = "loading " + cfg.model + " ...";
      let partial = new Uint8Array(0);
      worker.onmessage = ({ data: m }) => {
        if (m.type === "error") { status.textContent = "error: " + m.message; return; }
        if (m.type === "start") {
          enc = m.encoding; engine = m.simd ? "WebAssembly SIMD" : "JavaScript";
          const K = enc.n_keys, seedRoll = [];
          for (let t = 0; t * K < m.seed.length; t++) seedRoll.push(m.seed.slice(t * K, (t + 1) * K));
          rows = seedRoll.slice(); seedRows = seedRoll.length;
          roll = new PianolabRoll(canvas, enc, { seedSteps: seedRows, totalSteps: seedRows + Math.round(cfg.seconds * enc.steps_per_second) });
          roll.addSteps(seedRoll);
          roll.onseek = (sec) => startPlay(sec);
          partial = new Uint8Array(0);
        } else if (m.type === "states") {
          const K = enc.n_keys, joined = new Uint8Array(partial.length + m.states.length);
          joined.set(partial); joined.set(m.states, partial.length);
          const whole = Math.floor(joined.length / K), fresh = [];
          for (let t = 0; t < whole; t++) fresh.push(joined.slice(t * K, (t + 1) * K));
          partial = joined.slice(whole * K);
          rows.push(...fresh); roll.addSteps(fresh);
          status.textContent = `${(rows.length - seedRows)} / ${steps} time steps, ${Math.round(m.rate).toLocaleString("en")} key states/s` +
            ` (${(m.rate / (enc.n_keys * enc.steps_per_second)).toFixed(2)} x real time, ${engine})`;
        } else if (m.type === "done") {
          status.textContent += `; done in ${m.seconds.toFixed(1)} s`;
          play.disabled = save.disabled = false;
          div.dataset.done = String(Date.now());
          startPlay(0); // then it plays, with the cursor
        }
      };
      worker.postMessage({ cmd: "generate", base: new URL("weights/", BASE).href, model: cfg.model, seed: seedSpec,
        steps, temperature: cfg.temperature, edgeAversion: !!cfg.edge, randomSeed: cfg.rs });
    };

    function startPlay(offset = 0) {
      stop();
      const wave = PianolabSynth.render(rows, enc);
      sound = PianolabSynth.play(wave, PianolabSynth.SAMPLE_RATE, Math.min(offset, wave.length / PianolabSynth.SAMPLE_RATE), context());
      play.textContent = "Stop";
      const mine = sound;
      const tick = () => {
        if (sound !== mine) return;
        const at = mine.offset + mine.ctx.currentTime - mine.startedAt;
        roll.setCursor(at);
        if (at < mine.duration) requestAnimationFrame(tick); else stop();
      };
      requestAnimationFrame(tick);
    }
    play.onclick = () => (sound ? stop() : startPlay(0));
    save.onclick = () => {
      const blob = new Blob([midiBytes(performance_(), enc)], { type: "audio/midi" });
      const a = el("a", { href: URL.createObjectURL(blob), download: `pianolab-${location.hash.slice(1).replace(/[^\w.=-]+/g, "_")}.mid` });
      document.body.append(a); a.click(); a.remove();
    };
    div.generator = { settings, rows: () => rows, cursor: () => (roll ? roll.cursor : null), performance: performance_, midi: () => midiBytes(performance_(), enc) };
  }

  function buildAll() { for (const div of document.querySelectorAll("div.pianolab-generator:not([data-ready])")) { div.dataset.ready = "1"; build(div); } }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", buildAll); else buildAll();
  return { midiBytes, readHash, build };
})();

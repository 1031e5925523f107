// The page's piano: the formula of pianolab.audio's numpy synthesiser (_piano_tone, _render_numpy,
// synthesize), sample for sample, so the browser and pianolab's fallback sound alike (chapter 1).
//
// A roll becomes notes the way pianolab.encoding.roll_to_midi makes them (one note per run of 1s,
// velocity 80); each note is a sum of slightly inharmonic partials, each decaying exponentially,
// with a 4 ms attack and a 0.12 s release; the mix is scaled to a peak of 0.9.
"use strict";

const PianolabSynth = (() => {
  const SAMPLE_RATE = 22050, RELEASE_SECONDS = 1.0, PEAK = 0.9, VELOCITY = 80;

  // Python's round(): halves go to the even neighbour.
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // A roll (rows of 0/1) -> notes [pitch, start s, end s, velocity], sorted by start then pitch.
  function rollNotes(roll, encoding) {
    const fs = encoding.steps_per_second, notes = [], K = encoding.n_keys, T = roll.length;
    for (let k = 0; k < K; k++) {
      let s = -1;
      for (let t = 0; t <= T; t++) {
        const on = t < T && roll[t][k];
        if (on && s < 0) s = t;
        else if (!on && s >= 0) { notes.push([encoding.lowest + k, s / fs, t / fs, VELOCITY]); s = -1; }
      }
    }
    return notes.sort((a, b) => a[1] - b[1] || a[0] - b[0]);
  }

  // One note: nHeld samples held, then released; nTotal samples in all (pianolab.audio._piano_tone).
  function pianoTone(pitch, nHeld, nTotal, sr, out, offset, gain) {
    const f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0);
    const inharmonicity = 4e-4 * (f0 / 261.6) ** 0.5, tau = 1.6 * (261.6 / f0) ** 0.55;
    const partials = [];
    for (let h = 1; h < 9; h++) {
      const fh = h * f0 * Math.sqrt(1.0 + inharmonicity * h * h);
      if (fh >= sr / 2 * 0.95) break;
      partials.push([h ** 0.7, fh, 0.3 * h, h ** 1.3]);
    }
    // Each partial's decay and sine advance by one multiplication and one rotation per sample, set
    // exactly (Math.exp, Math.sin, Math.cos) every BLOCK samples: the same numbers to about 1e-12,
    // several times faster than three transcendental calls per sample and partial.
    const tone = new Float64Array(nTotal), BLOCK = 1024;
    for (const [decay, fh, phase, weight] of partials) {
      const g = Math.exp(-1 / sr * decay / tau), cw = Math.cos(2.0 * Math.PI * fh / sr), sw = Math.sin(2.0 * Math.PI * fh / sr);
      for (let i0 = 0; i0 < nTotal; i0 += BLOCK) {
        const t0 = i0 / sr;
        let e = Math.exp(-t0 * decay / tau), sn = Math.sin(2.0 * Math.PI * fh * t0 + phase), cs = Math.cos(2.0 * Math.PI * fh * t0 + phase);
        for (let i = i0, end = Math.min(i0 + BLOCK, nTotal); i < end; i++) {
          tone[i] += e * sn / weight;
          e *= g;
          const next = sn * cw + cs * sw;
          cs = cs * cw - sn * sw; sn = next;
        }
      }
    }
    for (let i = 0; i < nTotal; i++) {
      const t = i / sr;
      let envelope = Math.min(1.0, t / 0.004);
      if (i >= nHeld) envelope *= Math.exp(-(i - nHeld) / sr / 0.12);
      out[offset + i] += gain * (tone[i] * envelope);
    }
  }

  // A roll -> Float32Array waveform at sr, peak 0.9, lasting the roll plus 1 s (pianolab.audio.synthesize).
  function render(roll, encoding, sr = SAMPLE_RATE) {
    const notes = rollNotes(roll, encoding);
    const duration = roll.length / encoding.steps_per_second;
    const n = roundHalfEven((duration + RELEASE_SECONDS) * sr), release = Math.trunc(0.6 * sr);
    const out = new Float64Array(n);
    for (const [pitch, start, end, velocity] of notes) {
      const s = roundHalfEven(start * sr), held = Math.max(1, roundHalfEven(end * sr) - s);
      const total = Math.min(held + release, n - s);
      if (total > 0) pianoTone(pitch, Math.min(held, total), total, sr, out, s, 0.15 * velocity / 127.0);
    }
    const wave = Float32Array.from(out);
    let peak = 0;
    for (let i = 0; i < n; i++) peak = Math.max(peak, Math.abs(wave[i]));
    if (peak > 0) { const g = Math.fround(PEAK / peak); for (let i = 0; i < n; i++) wave[i] = wave[i] * g; }
    return wave;
  }

  // Play a waveform from offset seconds on, in ctx (an AudioContext made while the reader clicked:
  // browsers let such a context sound later); returns {ctx, source, startedAt, offset, duration}
  // so a cursor can follow ctx.currentTime.
  function play(wave, sr = SAMPLE_RATE, offset = 0, ctx = new AudioContext()) {
    if (ctx.state === "suspended") ctx.resume();
    const buffer = ctx.createBuffer(1, wave.length, sr);
    buffer.copyToChannel(wave, 0);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    source.start(0, offset);
    return { ctx, source, startedAt: ctx.currentTime, offset, duration: wave.length / sr };
  }

  return { SAMPLE_RATE, roundHalfEven, rollNotes, render, play };
})();

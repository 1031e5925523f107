// A piano roll on a canvas with a cursor that follows the sound and can be clicked to seek.
//
// new PianolabRoll(canvas, {lowest, n_keys, steps_per_second}) draws rows of 0/1 (addSteps, as a
// generator delivers them: runs of 1s become notes [key, first step, end step]); setCursor(seconds)
// moves the cursor; onseek(seconds) is called when the reader clicks. Steps before seedSteps are
// drawn in the seed colour. Every <div class="pianolab-roll"> of the page (what pianolab.audio's
// players write under an <audio> element) gets one, tied to its audio element.
"use strict";

class PianolabRoll {
  constructor(canvas, encoding, { seedSteps = 0, totalSteps = 0 } = {}) {
    this.canvas = canvas;
    this.encoding = encoding;
    this.seedSteps = seedSteps;
    this.totalSteps = totalSteps; // the width the roll is drawn for (grows if more arrive)
    this.notes = []; // [key, first step, end step]
    this.open = new Map(); // key -> first step of a note still sounding at the last row
    this.steps = 0;
    this.cursor = null;
    this.onseek = null;
    canvas.addEventListener("click", (e) => {
      if (!this.onseek) return;
      const r = canvas.getBoundingClientRect();
      this.onseek(((e.clientX - r.left) / r.width) * this.width() / this.encoding.steps_per_second);
    });
  }

  width() { return Math.max(this.totalSteps, this.steps, 1); }

  addSteps(rows) { // rows: arrays of 0/1, one per time step, in order
    for (const row of rows) {
      const t = this.steps++;
      for (let k = 0; k < row.length; k++) {
        if (row[k] && !this.open.has(k)) this.open.set(k, t);
        else if (!row[k] && this.open.has(k)) { this.notes.push([k, this.open.get(k), t]); this.open.delete(k); }
      }
    }
    this.draw();
  }

  allNotes() { return this.notes.concat([...this.open].map(([k, s]) => [k, s, this.steps])); }

  setCursor(seconds) {
    this.cursor = seconds;
    this.draw();
  }

  draw() {
    const c = this.canvas, g = c.getContext("2d"), K = this.encoding.n_keys;
    const dpr = window.devicePixelRatio || 1, w = c.clientWidth || 600, h = c.clientHeight || 120;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = "#fbfbf8";
    g.fillRect(0, 0, w, h);
    const sx = w / this.width(), sy = h / K;
    g.fillStyle = "#eeeeea"; // the black keys' rows
    for (let k = 0; k < K; k++) if ([1, 3, 6, 8, 10].includes((this.encoding.lowest + k) % 12)) g.fillRect(0, h - (k + 1) * sy, w, sy);
    for (const [k, s, e] of this.allNotes()) {
      g.fillStyle = s < this.seedSteps ? "#9a9a9a" : "#2a6fb0";
      g.fillRect(s * sx, h - (k + 1) * sy, Math.max(1, (e - s) * sx - 0.5), Math.max(1, sy - 0.5));
    }
    if (this.seedSteps > 0) {
      g.strokeStyle = "#c77700";
      g.beginPath(); g.moveTo(this.seedSteps * sx, 0); g.lineTo(this.seedSteps * sx, h); g.stroke();
    }
    if (this.cursor !== null) {
      const x = this.cursor * this.encoding.steps_per_second * sx;
      g.strokeStyle = "#d0312d"; g.lineWidth = 2;
      g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke();
      g.lineWidth = 1;
    }
  }

  // A roll under an <audio> element: the cursor follows audio.currentTime while it plays.
  static follow(audio, roll) {
    let frame = null;
    const tick = () => { roll.setCursor(audio.currentTime); frame = audio.paused ? null : requestAnimationFrame(tick); };
    audio.addEventListener("play", () => { if (frame === null) frame = requestAnimationFrame(tick); });
    for (const ev of ["pause", "seeked", "timeupdate", "ended"]) audio.addEventListener(ev, () => roll.setCursor(audio.currentTime));
    roll.onseek = (seconds) => { audio.currentTime = seconds; roll.setCursor(seconds); };
  }

  // Every <div class="pianolab-roll" data-lowest data-keys data-steps data-fs data-seed data-bits> of
  // the page (pianolab.audio's players write one under each clip given as a roll: data-bits is the
  // roll, numpy.packbits of its rows in order, base64), tied to the <audio> in the same parent.
  static attachAll(root = document) {
    for (const div of root.querySelectorAll("div.pianolab-roll:not([data-ready])")) {
      div.dataset.ready = "1";
      const d = div.dataset, K = +d.keys, T = +d.steps, bytes = atob(d.bits), rows = [];
      for (let t = 0; t < T; t++) {
        const row = new Uint8Array(K);
        for (let k = 0, i = t * K; k < K; k++, i++) row[k] = (bytes.charCodeAt(i >> 3) >> (7 - (i & 7))) & 1;
        rows.push(row);
      }
      const canvas = document.createElement("canvas");
      canvas.style.cssText = "width:100%;height:90px;display:block;cursor:pointer;border:1px solid #ddd";
      canvas.title = "piano roll: click to play from there";
      div.appendChild(canvas);
      const roll = new PianolabRoll(canvas, { lowest: +d.lowest, n_keys: K, steps_per_second: +d.fs },
        { seedSteps: +d.seed || 0, totalSteps: T });
      roll.addSteps(rows);
      const audio = div.parentElement.querySelector("audio");
      if (audio) PianolabRoll.follow(audio, roll);
      div.roll = roll;
    }
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => PianolabRoll.attachAll());
else PianolabRoll.attachAll();

// Fast-WaveNet sampling in the page: the same steps as pianolab.generate.FastSampler (chapter 5).
//
// A model is a chain of dilated kernel-2 layers, y[t] = act(x[t - d] W0 + x[t] W1 + b), then a 1x1
// sigmoid. Each layer keeps a queue of its last d inputs (a ring buffer: position t lives in row
// t % d, which holds x[t - d] until x[t] overwrites it), so one new key state costs one kernel-2
// step per layer. Weights come from NAME.json + NAME.bin, written at book build time by
// book/_ext/pianolab_web.py. Sums are in float64 over the float32 weights; a probability is rounded
// to float32 (Math.fround) before it is compared, as pianolab's float32 kernel compares it. ELU's
// exp(v) - 1 is computed in float64: float32-accurate, and faster here than Math.expm1.
//
// Loaded with <script> it defines PianolabSampler; loaded as a Web Worker it answers messages
// (see onmessage at the end): the page stays responsive while the model plays.
"use strict";

const PianolabSampler = (() => {
  const ACTIVATIONS = ["elu", "relu", "linear"]; // pianolab._kernel.ACTIVATIONS

  // NAME.json + the ArrayBuffer of NAME.bin -> a net: per layer W [c_out][older c_in | newer c_in].
  function loadNet(desc, buffer, { simd = true } = {}) {
    const f32 = (offset, n) => new Float32Array(buffer, offset, n);
    const layers = desc.layers.map((L) => {
      const [, cin, cout] = L.kernel_shape;
      const k = f32(L.kernel_offset, 2 * cin * cout); // Keras: [tap][c_in][c_out]
      const W = new Float32Array(cout * 2 * cin);
      for (let j = 0; j < cout; j++)
        for (let tap = 0; tap < 2; tap++)
          for (let i = 0; i < cin; i++) W[j * 2 * cin + tap * cin + i] = k[(tap * cin + i) * cout + j];
      if (!ACTIVATIONS.includes(L.activation)) throw new Error(`${desc.name}: unknown activation ${L.activation}`);
      return { cin, cout, d: L.dilation, act: L.activation, W, b: Float64Array.from(f32(L.bias_offset, cout)) };
    });
    const cmax = Math.max(...layers.map((L) => Math.max(L.cin, L.cout)));
    const net = {
      name: desc.name, layers, cmax, encoding: desc.encoding, nKeys: desc.encoding.n_keys,
      receptiveField: desc.receptive_field, thresholds: Float64Array.from(desc.edge_thresholds, Math.fround),
      wOut: Float64Array.from(f32(desc.output.weights_offset, desc.output.size)),
      bOut: Math.fround(f32(desc.output.bias_offset, 1)[0]),
    };
    net.simd = simd ? simdNet(net) : null;
    return net;
  }

  async function fetchNet(baseUrl, name, options) {
    const url = new URL(`${name}.json`, baseUrl), desc = await (await fetch(url)).json();
    const bin = await (await fetch(new URL(desc.bin, url))).arrayBuffer();
    if (bin.byteLength !== desc.bytes) throw new Error(`${desc.bin}: ${bin.byteLength} bytes, expected ${desc.bytes}`);
    return loadNet(desc, bin, options);
  }

  // One layer step for one stream: xs = [older | newer] (2 c_in), out = act(W xs + b).
  function dense(L, xs, out) {
    const { W, b, cout } = L, k2 = 2 * L.cin;
    let j = 0;
    for (; j + 4 <= cout; j += 4) { // four weight rows per pass over xs
      let a0 = b[j], a1 = b[j + 1], a2 = b[j + 2], a3 = b[j + 3];
      const r0 = j * k2, r1 = r0 + k2, r2 = r1 + k2, r3 = r2 + k2;
      for (let k = 0; k < k2; k++) {
        const y = xs[k];
        a0 += y * W[r0 + k]; a1 += y * W[r1 + k]; a2 += y * W[r2 + k]; a3 += y * W[r3 + k];
      }
      out[j] = a0; out[j + 1] = a1; out[j + 2] = a2; out[j + 3] = a3;
    }
    for (; j < cout; j++) {
      let a = b[j];
      const r = j * k2;
      for (let k = 0; k < k2; k++) a += xs[k] * W[r + k];
      out[j] = a;
    }
    if (L.act === "elu") for (j = 0; j < cout; j++) { const v = out[j]; if (!(v > 0)) out[j] = Math.exp(v) - 1; }
    else if (L.act === "relu") for (j = 0; j < cout; j++) out[j] = Math.max(out[j], 0);
  }

  // Optional speed-up: the dense step above as a WebAssembly SIMD function, assembled here, byte by
  // byte (no toolchain, no binary file): four rows of W at a time, four floats of each row per
  // instruction, float32 sums (as pianolab's kernel). Where the browser lacks WebAssembly SIMD the
  // plain loop above runs. dense4(W, xs, b, out, rows, k2): addresses in bytes, rows and k2
  // multiples of 4, W rows of k2 floats; out[j] = b[j] + sum_k W[j, k] xs[k]. Opcodes used:
  // 0x20/0x21/0x22 local.get/set/tee, 0x41 i32.const, 0x43 f32.const, 0x6a i32.add, 0x6c i32.mul,
  // 0x74 i32.shl, 0x49 i32.lt_u, 0x03 loop, 0x0d br_if, 0x0b end, 0x2a f32.load, 0x38 f32.store,
  // 0x92 f32.add; after the SIMD prefix 0xfd: 0x00 v128.load, 0x13 f32x4.splat,
  // 0x1f f32x4.extract_lane, 0xe4 f32x4.add, 0xe6 f32x4.mul.
  function simdModule() {
    const leb = (n) => { const out = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b); } while (n); return out; };
    const sleb = (n) => { const out = []; for (;;) { const b = n & 0x7f; n >>= 7; if ((n === 0 && !(b & 0x40)) || (n === -1 && (b & 0x40))) { out.push(b); return out; } out.push(b | 0x80); } };
    const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
    const vec = (items) => [...leb(items.length), ...items.flat()];
    const str = (s) => [...leb(s.length), ...[...s].map((c) => c.charCodeAt(0))];
    const [W, X, B, OUT, ROWS, K2, J, K, ROWB, R0, A0] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]; // locals; A0..A0+3: v128
    const get = (i) => [0x20, i], set = (i) => [0x21, i], i32 = (n) => [0x41, ...sleb(n)];
    const simd = (op, ...imm) => [0xfd, ...leb(op), ...imm];
    const load = (addr) => [...addr, ...simd(0x00, 4, 0)]; // v128.load align 16
    const rowAddr = (i) => [...get(R0), ...get(ROWB), ...i32(i), 0x6c, 0x6a]; // r0 + i * rowbytes
    const body = [
      ...get(K2), ...i32(4), 0x6c, ...set(ROWB), // rowbytes = k2 * 4
      ...i32(0), ...set(J),
      0x03, 0x40, // loop over groups of four rows
      ...get(W), ...get(J), ...get(ROWB), 0x6c, 0x6a, ...set(R0), // r0 = W + j * rowbytes
      ...[0, 1, 2, 3].flatMap((i) => [0x43, 0, 0, 0, 0, ...simd(0x13), ...set(A0 + i)]), // a_i = 0
      ...i32(0), ...set(K),
      0x03, 0x40, // loop over k, 16 bytes at a time
      ...[0, 1, 2, 3].flatMap((i) => [...get(A0 + i), ...load([...rowAddr(i), ...get(K), 0x6a]),
        ...load([...get(X), ...get(K), 0x6a]), ...simd(0xe6), ...simd(0xe4), ...set(A0 + i)]),
      ...get(K), ...i32(16), 0x6a, 0x22, K, ...get(ROWB), 0x49, 0x0d, 0, // k += 16; again while k < rowbytes
      0x0b,
      ...[0, 1, 2, 3].flatMap((i) => [
        ...get(OUT), ...get(J), ...i32(i), 0x6a, ...i32(2), 0x74, 0x6a, // &out[j + i]
        ...get(B), ...get(J), ...i32(i), 0x6a, ...i32(2), 0x74, 0x6a, 0x2a, 2, 0, // b[j + i]
        ...get(A0 + i), ...simd(0x1f, 0), ...get(A0 + i), ...simd(0x1f, 1), 0x92,
        ...get(A0 + i), ...simd(0x1f, 2), ...get(A0 + i), ...simd(0x1f, 3), 0x92, 0x92, 0x92, // + lane sums
        0x38, 2, 0]), // f32.store
      ...get(J), ...i32(4), 0x6a, 0x22, J, ...get(ROWS), 0x49, 0x0d, 0, // j += 4; again while j < rows
      0x0b, 0x0b];
    const code = [...leb(2), ...leb(4), 0x7f, ...leb(4), 0x7b, ...body]; // locals: 4 i32, 4 v128
    const bytes = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
      ...section(1, vec([[0x60, ...vec([0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f].map((t) => [t])), 0x00]])),
      ...section(2, vec([[...str("env"), ...str("memory"), 0x02, 0x00, 0x01]])),
      ...section(3, vec([[0x00]])),
      ...section(7, vec([[...str("dense4"), 0x00, 0x00]])),
      ...section(10, vec([[...leb(code.length), ...code]]))];
    return new Uint8Array(bytes);
  }

  // The nets' weights in one WebAssembly memory, laid out for dense4 (or null: no SIMD here).
  function simdNet(net) {
    const wasm = simdModule();
    if (typeof WebAssembly === "undefined" || !WebAssembly.validate(wasm)) return null;
    const up4 = (n) => (n + 3) & ~3;
    let floats = 0;
    const plan = net.layers.map((L) => {
      const k2 = up4(2 * L.cin), rows = up4(L.cout), at = { W: floats, b: floats + rows * k2 };
      floats = at.b + rows;
      return { k2, rows, ...at };
    });
    const xs = floats, out = xs + up4(2 * net.cmax) + 4;
    floats = out + up4(net.cmax) + 4;
    const memory = new WebAssembly.Memory({ initial: Math.ceil((floats * 4) / 65536) + 1 });
    const f = new Float32Array(memory.buffer);
    net.layers.forEach((L, l) => {
      const P = plan[l];
      for (let j = 0; j < L.cout; j++) {
        for (let i = 0; i < L.cin; i++) { f[P.W + j * P.k2 + i] = L.W[j * 2 * L.cin + i]; f[P.W + j * P.k2 + L.cin + i] = L.W[j * 2 * L.cin + L.cin + i]; }
        f[P.b + j] = L.b[j];
      }
    });
    const { dense4 } = new WebAssembly.Instance(new WebAssembly.Module(wasm), { env: { memory } }).exports;
    return { dense4, f, plan, xs, out };
  }

  // The queues when all of the history is silence: each layer's constant input, d times.
  function silenceQueues(net) {
    let h = new Float64Array(1);
    return net.layers.map((L) => {
      const q = new Float64Array(L.d * L.cin);
      for (let r = 0; r < L.d; r++) q.set(h, r * L.cin);
      const xs = new Float64Array(2 * L.cin), out = new Float64Array(L.cout);
      xs.set(h, 0); xs.set(h, L.cin);
      dense(L, xs, out);
      h = Float32Array.from(out); // pianolab computes these in float32
      return q;
    });
  }

  // A stream: its queues, its newest state x and that state's position t.
  function newStream(net) {
    const queues = silenceQueues(net);
    return { queues: net.simd ? queues.map((q) => Float32Array.from(q)) : queues, x: 0, t: -1,
             xs: new Float64Array(2 * net.cmax), h: [new Float64Array(net.cmax), new Float64Array(net.cmax)],
             h32: new Float32Array(net.cmax) };
  }

  // The newest state s.x (position s.t) goes in; the logit of position s.t + 1 comes out.
  function step(net, s) {
    if (net.simd) return stepSimd(net, s);
    let h = s.h[0], out = s.h[1];
    h[0] = s.x;
    const { xs } = s;
    for (let l = 0; l < net.layers.length; l++) {
      const L = net.layers[l], ci = L.cin, q = s.queues[l];
      const row = (s.t & (L.d - 1)) * ci; // holds x[t - d]; gets x[t]
      for (let k = 0; k < ci; k++) { xs[k] = q[row + k]; xs[ci + k] = h[k]; q[row + k] = h[k]; }
      dense(L, xs, out);
      [h, out] = [out, h];
    }
    let z = net.bOut;
    for (let k = 0; k < net.wOut.length; k++) z += h[k] * net.wOut[k];
    return z;
  }

  // step() with each layer's dense part in WebAssembly (float32 activations, as pianolab's kernel).
  function stepSimd(net, s) {
    const { dense4, f, plan, xs, out } = net.simd, h = s.h32;
    h[0] = s.x;
    for (let l = 0; l < net.layers.length; l++) {
      const L = net.layers[l], P = plan[l], ci = L.cin, co = L.cout, q = s.queues[l];
      const row = (s.t & (L.d - 1)) * ci;
      for (let k = 0; k < ci; k++) { f[xs + k] = q[row + k]; f[xs + ci + k] = h[k]; q[row + k] = h[k]; }
      dense4(4 * P.W, 4 * xs, 4 * P.b, 4 * out, P.rows, P.k2);
      if (L.act === "elu") for (let j = 0; j < co; j++) { const v = f[out + j]; h[j] = v > 0 ? v : Math.exp(v) - 1; }
      else if (L.act === "relu") for (let j = 0; j < co; j++) h[j] = Math.max(f[out + j], 0);
      else for (let j = 0; j < co; j++) h[j] = f[out + j];
    }
    let z = net.bOut;
    for (let k = 0; k < net.wOut.length; k++) z += h[k] * net.wOut[k];
    return z;
  }

  const sigmoid = (z) => 1 / (1 + Math.exp(Math.min(-z, 80)));

  // Advance stream s by n key states. Step i writes the model's probability of position s.t + 1 to
  // probs[i] and that position's state to states[i]: forced[i] when forced is given (teacher
  // forcing), else drawn with the uniform u[i] after temperature and the edge thresholds.
  function run(net, s, n, { forced = null, u = null, temperature = 1, edgeAversion = true, probs = null, states = null } = {}) {
    const K = net.nKeys, thr = edgeAversion ? net.thresholds : new Float64Array(0);
    const invTemp = Math.fround(1 / temperature);
    states = states || new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const z = step(net, s);
      const p = Math.fround(sigmoid(z));
      if (probs) probs[i] = p;
      let x;
      if (forced) x = forced[i];
      else {
        let q = invTemp !== 1 ? Math.fround(sigmoid(Math.fround(z * invTemp))) : p;
        const key = (s.t + 1) % K, dist = Math.min(key, K - 1 - key);
        if (dist < thr.length && q < thr[dist]) q = 0; // edge aversion: PianoNet's rule
        x = u[i] < q ? 1 : 0;
      }
      s.x = x; s.t += 1; states[i] = x;
    }
    return states;
  }

  // A seed roll (array of rows of 0/1, or null: silence) -> flat history, zero-padded on the left to
  // whole time steps and at least the receptive field (pianolab.generate.seed_history).
  function seedHistory(net, roll) {
    const K = net.nKeys, T = roll ? roll.length : 0;
    const pad = Math.max(0, Math.ceil(net.receptiveField / K) - T);
    const hist = new Uint8Array((pad + T) * K);
    for (let r = 0; r < T; r++) hist.set(roll[r], (pad + r) * K);
    return hist;
  }

  // A stream ready to draw the state after hist: silence's queues, then forced steps from the first
  // sounding state among the last RF (FastSampler._start).
  function start(net, hist) {
    const s = newStream(net), n = hist.length, first = Math.max(0, n - net.receptiveField);
    let f = first;
    while (f < n && !hist[f]) f++;
    s.t = (f < n ? f : n) - 1;
    if (f < n) run(net, s, n - f, { forced: hist.subarray(f) });
    return s;
  }

  // A seedable uniform generator for the page (sfc32, seeded through splitmix32): the same random
  // seed gives the same performance. (pianolab's numpy generator is not reproduced; the tests feed
  // this sampler numpy's uniforms instead.)
  function rng(seed) {
    let m = seed >>> 0;
    const split = () => { m = (m + 0x9e3779b9) >>> 0; let z = m; z = Math.imul(z ^ (z >>> 16), 0x85ebca6b); z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35); return (z ^ (z >>> 16)) >>> 0; };
    let a = split(), b = split(), c = split(), d = split();
    return () => {
      const t = (((a + b) >>> 0) + d) >>> 0;
      d = (d + 1) >>> 0; a = b ^ (b >>> 9); b = (c + (c << 3)) >>> 0; c = ((c << 21) | (c >>> 11)) >>> 0; c = (c + t) >>> 0;
      return t / 4294967296;
    };
  }

  // Seed notes [[midi pitch, first step, end step], ...] -> a roll in the net's key window (notes
  // outside it folded by whole octaves into it, as pianolab.encoding does by default).
  function notesToRoll(net, notes, nSteps) {
    const { lowest, n_keys: K } = net.encoding, hi = lowest + K - 1;
    const roll = Array.from({ length: nSteps }, () => new Uint8Array(K));
    for (const [pitch0, a, e] of notes) {
      let pitch = pitch0;
      if (pitch < lowest) pitch = lowest + (((pitch - lowest) % 12) + 12) % 12;
      else if (pitch > hi) pitch = hi - (((hi - pitch) % 12) + 12) % 12;
      if (pitch < lowest || pitch > hi) continue;
      for (let t = a; t < Math.min(e, nSteps); t++) roll[t][pitch - lowest] = 1;
    }
    return roll;
  }

  return { loadNet, fetchNet, silenceQueues, newStream, step, run, seedHistory, start, rng, notesToRoll };
})();

// As a Web Worker: {cmd: "generate", base, model, seed: {notes, steps} | null, steps, temperature,
// edgeAversion, randomSeed} -> {type: "states", from, states, rate} messages, then {type: "done"}.
if (typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope) {
  const nets = {};
  let job = 0;
  self.onmessage = async ({ data: msg }) => {
    if (msg.cmd === "stop") { job++; return; }
    if (msg.cmd !== "generate") return;
    const mine = ++job;
    try {
      const S = PianolabSampler;
      const net = nets[msg.model] || (nets[msg.model] = await S.fetchNet(msg.base, msg.model));
      const seedRoll = msg.seed ? S.notesToRoll(net, msg.seed.notes, msg.seed.steps) : null;
      const s = S.start(net, S.seedHistory(net, seedRoll));
      const draw = S.rng(msg.randomSeed), K = net.nKeys, total = msg.steps * K, chunk = 4 * K;
      const t0 = performance.now();
      const seed = new Uint8Array((seedRoll || []).length * K);
      (seedRoll || []).forEach((row, t) => seed.set(row, t * K));
      self.postMessage({ type: "start", encoding: net.encoding, seed, simd: !!net.simd });
      for (let from = 0; from < total && mine === job;) {
        const batch = [], tick = performance.now(); // about 50 ms of work between two messages
        do {
          const n = Math.min(chunk, total - from), u = new Float64Array(n);
          for (let i = 0; i < n; i++) u[i] = draw();
          batch.push(S.run(net, s, n, { u, temperature: msg.temperature, edgeAversion: msg.edgeAversion }));
          from += n;
        } while (from < total && performance.now() - tick < 50);
        const states = new Uint8Array(batch.reduce((a, b) => a + b.length, 0));
        batch.reduce((at, b) => (states.set(b, at), at + b.length), 0);
        const rate = from / ((performance.now() - t0) / 1000);
        self.postMessage({ type: "states", from: from - states.length, states, rate }, [states.buffer]);
        await new Promise((r) => setTimeout(r, 0)); // let a "stop" message in
      }
      if (mine === job) self.postMessage({ type: "done", seconds: (performance.now() - t0) / 1000 });
    } catch (err) {
      self.postMessage({ type: "error", message: String(err && err.message || err) });
    }
  };
}

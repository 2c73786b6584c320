// AdamW (src/engine/adamw.ts) and the learning-rate schedules: several updates against a
// float64 torch.optim.AdamW + clip_grad_norm_ reference with Trainer-style weight-decay
// groups, clipping, schedule values, bit-exact continuation through saved state (in
// memory and on disk), clear errors for states that do not fit, refusal of non-finite
// gradients without side effects, and a small memorisation problem AdamW must solve.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdamW, NonFiniteGradError, Tensor, defaultNoDecay, linearWarmup, type AdamWState } from '../../src/index.js';
import { saveSafetensors, loadSafetensors } from '../../src/engine/safetensors.js';
import { ReferenceAdamW } from '../reference/adamw_optimizer.js';
import { ON_GPU, Rng, assertClose, rng } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'lgrpo-adamw-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// Qwen2-style names and awkward sizes; 70_001 crosses gradSumSquares' 64 Ki chunk.
const LAYOUT: Array<[string, number]> = [
  ['model.embed_tokens.weight', 70_001],
  ['model.layers.0.input_layernorm.weight', 7],
  ['model.layers.0.self_attn.q_proj.weight', 33 * 9],
  ['model.layers.0.self_attn.q_proj.bias', 33],
  ['model.layers.0.post_attention_layernorm.weight', 1],
  ['model.layers.0.mlp.down_proj.weight', 4099],
  ['model.norm.weight', 8],
  ['lm_head.weight', 0],
];
const NO_DECAY = [
  'model.layers.0.input_layernorm.weight', 'model.layers.0.self_attn.q_proj.bias',
  'model.layers.0.post_attention_layernorm.weight', 'model.norm.weight',
];

function randomParams(r: Rng, layout = LAYOUT): Map<string, Float32Array> {
  return new Map(layout.map(([name, n]) => [name, r.normals(n)]));
}

function zeroGrads(params: Map<string, Float32Array>): Map<string, Float32Array> {
  return new Map([...params].map(([name, p]) => [name, new Float32Array(p.length)]));
}

function fillGrads(r: Rng, grads: Map<string, Float32Array>, scale = 1): void {
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] = r.normal() * scale;
}

function copyOf(grads: Map<string, Float32Array>): Map<string, Float32Array> {
  return new Map([...grads].map(([name, g]) => [name, g.slice()]));
}

function bits(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function assertSameBits(actual: Map<string, Float32Array>, expected: Map<string, Float32Array>, label: string): void {
  for (const [name, e] of expected) assert.ok(bits(actual.get(name)!).equals(bits(e)), `${label}: ${name} differs`);
}

function stateBits(s: AdamWState): string {
  const moments = s.moments instanceof Map ? [...s.moments] : Object.entries(s.moments);
  return JSON.stringify({ step: s.step, h: s.hyperparameters, noDecay: s.noDecay }) +
    moments.map(([name, m]) => name + bits(m.expAvg).toString('hex') + bits(m.expAvgSq).toString('hex')).join('|');
}

describe('AdamW (CPU)', { skip: ON_GPU ? 'CPU-only engine optimiser' : false }, () => {
  it('default noDecay exempts biases and norm weights, as Hugging Face Trainer does', () => {
    const params = randomParams(rng('groups'));
    const opt = new AdamW(params, zeroGrads(params), { lr: 1e-3 });
    assert.deepEqual(opt.paramGroups().noDecay, NO_DECAY);
    assert.deepEqual(opt.paramGroups().decay, LAYOUT.map(([n]) => n).filter((n) => !NO_DECAY.includes(n)));
    assert.equal(defaultNoDecay('bias'), true);
    assert.equal(defaultNoDecay('model.layers.3.self_attn.o_proj.weight'), false);
    assert.equal(defaultNoDecay('encoder.LayerNorm.weight'), true);
    opt.dispose();
  });

  const cases = [
    { label: 'no weight decay, constant lr', weightDecay: 0, lr: 3e-2 as number | ((t: number) => number) },
    { label: 'weight decay 0.1 with groups, constant lr', weightDecay: 0.1, lr: 1e-2 },
    { label: 'weight decay 0.3, cosine schedule with warmup', weightDecay: 0.3, lr: linearWarmup(2e-2, 2, 7, { schedule: 'cosine' }) },
  ];
  for (const c of cases)
    it(`follows the float64 torch.optim.AdamW reference over 7 updates: ${c.label}`, () => {
      const r = rng(c.label);
      const params = randomParams(r);
      const grads = zeroGrads(params);
      const betas: [number, number] = [0.9, r.next() < 0.5 ? 0.999 : 0.95];
      const opt = new AdamW(params, grads, { lr: c.lr, betas, eps: 1e-8, weightDecay: c.weightDecay });
      const ref = new ReferenceAdamW(params, { lr: c.lr, beta1: betas[0], beta2: betas[1], eps: 1e-8, weightDecay: c.weightDecay, noDecay: defaultNoDecay });
      for (let t = 1; t <= 7; t++) {
        fillGrads(r, grads, t === 3 ? 1e-3 : 1);
        const before = copyOf(params);
        const expected = ref.update(copyOf(grads));
        const got = opt.step();
        assert.equal(got.step, t);
        assert.equal(got.clipped, false);
        assert.equal(got.lr, expected.lr);
        assertClose(got.gradNorm, expected.gradNorm, { atol: 0, rtol: 1e-12 }, `step ${t} gradNorm`);
        // The warmup's first update has lr 0: weights stay exactly where they were.
        if (expected.lr === 0) assertSameBits(params, before, `step ${t} with lr 0`);
        for (const [name, p] of params) assertClose(p, ref.state.get(name)!.param, { atol: 3e-6, rtol: 3e-6 }, `step ${t} ${name}`);
      }
      const state = opt.state();
      for (const [name, m] of state.moments as Map<string, { expAvg: Float32Array; expAvgSq: Float32Array }>) {
        assertClose(m.expAvg, ref.state.get(name)!.expAvg, { atol: 2e-7, rtol: 2e-6 }, `${name} expAvg`);
        assertClose(m.expAvgSq, ref.state.get(name)!.expAvgSq, { atol: 1e-12, rtol: 2e-6 }, `${name} expAvgSq`);
      }
      opt.dispose();
    });

  it('applies a custom noDecay and f32 Tensor parameters of any shape', () => {
    const r = rng('custom noDecay');
    const w = Tensor.zeros([5, 13]), b = Tensor.zeros([5]);
    (w.data as Float32Array).set(r.normals(65));
    (b.data as Float32Array).set(r.normals(5));
    const gw = Tensor.zeros([65]), gb = new Float32Array(5);
    const noDecay = (name: string) => name === 'w';  // the opposite of the default
    const opt = new AdamW({ w, b }, { w: gw, b: gb }, { lr: 0.05, weightDecay: 0.5, noDecay });
    assert.deepEqual(opt.paramGroups(), { decay: ['b'], noDecay: ['w'] });
    const ref = new ReferenceAdamW(new Map([['w', w.data as Float32Array], ['b', b.data as Float32Array]]),
      { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5, noDecay });
    for (let t = 1; t <= 4; t++) {
      (gw.data as Float32Array).set(r.normals(65));
      gb.set(r.normals(5));
      ref.update(new Map([['w', (gw.data as Float32Array).slice()], ['b', gb.slice()]]));
      opt.step();
    }
    assertClose(w.data as Float32Array, ref.state.get('w')!.param, { atol: 3e-6, rtol: 3e-6 }, 'w');
    assertClose(b.data as Float32Array, ref.state.get('b')!.param, { atol: 3e-6, rtol: 3e-6 }, 'b');
    assert.deepEqual((opt.state().moments as Map<string, { shape: number[] }>).get('w')!.shape, [5, 13]);
    opt.dispose();
  });

  it('clips to maxGradNorm against the reference global norm, and leaves small gradients alone', () => {
    const r = rng('clip');
    const params = randomParams(r);
    const grads = zeroGrads(params);
    const opt = new AdamW(params, grads, { lr: 1e-2, weightDecay: 0.01, maxGradNorm: 1.0 });
    const ref = new ReferenceAdamW(params, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1.0, noDecay: defaultNoDecay });
    for (let t = 1; t <= 5; t++) {
      // Global norms ≈ 270·scale: clipped hard on odd steps, far below the limit on even ones.
      fillGrads(r, grads, t % 2 === 1 ? 1 : 1e-4);
      const original = copyOf(grads);
      const expected = ref.update(original);
      const got = opt.step();
      assert.equal(got.clipped, expected.clipped, `step ${t} clipped`);
      assert.equal(got.clipped, t % 2 === 1);
      assertClose(got.gradNorm, expected.gradNorm, { atol: 0, rtol: 1e-12 }, `step ${t} gradNorm`);
      const coef = 1.0 / (expected.gradNorm + 1e-6);
      for (const [name, g] of grads) {
        if (got.clipped) assertClose(g, Array.from(original.get(name)!, (x) => x * coef), { atol: 0, rtol: 1e-6 }, `step ${t} clipped ${name}`);
        else assert.ok(bits(g).equals(bits(original.get(name)!)), `step ${t}: unclipped ${name} was modified`);
      }
      for (const [name, p] of params) assertClose(p, ref.state.get(name)!.param, { atol: 3e-6, rtol: 3e-6 }, `step ${t} ${name}`);
    }
    opt.zeroGrad();
    assert.equal(opt.gradNorm(), 0);
    opt.dispose();
  });

  it('continues bit for bit after state() → loadState() and saveState() → loadStateFile()', () => {
    const seed = rng('resume').int(0, 2 ** 31);
    const options = { lr: linearWarmup(1e-2, 3, 12, { schedule: 'linear' }), betas: [0.8, 0.99] as [number, number], eps: 1e-7, weightDecay: 0.2, maxGradNorm: 50 };
    const layout = LAYOUT.slice(1);  // the big embedding adds nothing here but time
    // The same gradients for the same update in every run; every third update gets clipped.
    const gradsAt = (t: number) => new Map(layout.map(([name, n]) => [name, new Rng(seed + t).normals(n, t % 3 === 0 ? 10 : 1)]));
    const run = (opt: AdamW, grads: Map<string, Float32Array>, from: number, to: number) => {
      for (let t = from; t <= to; t++) {
        for (const [name, g] of gradsAt(t)) grads.get(name)!.set(g);
        assert.equal(opt.step().step, t);
      }
    };
    const initial = randomParams(new Rng(seed), layout);

    const straight = copyOf(initial), straightGrads = zeroGrads(straight);
    const a = new AdamW(straight, straightGrads, options);
    run(a, straightGrads, 1, 12);

    for (const via of ['memory', 'file'] as const) {
      const params = copyOf(initial), grads = zeroGrads(params);
      const b = new AdamW(params, grads, options);
      run(b, grads, 1, 5);
      // What a checkpoint holds: the weights (saved by the model, copied here) and the optimiser state.
      const checkpoint = copyOf(params);
      const path = join(dir, `resume-${via}.safetensors`);
      const snapshot = b.state();
      if (via === 'file') b.saveState(path);
      const snapshotBits = stateBits(snapshot);
      run(b, grads, 6, 7);
      assert.equal(stateBits(snapshot), snapshotBits, 'state() returned live memory, not a copy');
      b.dispose();

      // Different betas / eps / weight decay / clipping here: the state's values must win.
      const resumedGrads = zeroGrads(checkpoint);
      const c = new AdamW(checkpoint, resumedGrads, { ...options, betas: [0.5, 0.5], eps: 1, weightDecay: 0, maxGradNorm: undefined });
      if (via === 'file') c.loadStateFile(path);
      else c.loadState(snapshot);
      assert.equal(c.stepCount, 5);
      assert.deepEqual(c.hyperparameters, { lr: null, betas: [0.8, 0.99], eps: 1e-7, weightDecay: 0.2, maxGradNorm: 50 });
      assert.equal(stateBits(c.state()), snapshotBits, `${via}: the loaded state differs from the saved one`);
      run(c, resumedGrads, 6, 12);
      assertSameBits(checkpoint, straight, `resumed via ${via}`);
      assert.equal(stateBits(c.state()), stateBits(a.state()), `${via}: moments differ after resuming`);
      c.dispose();
    }

    // The file is an ordinary safetensors file: moments under <name>.exp_avg(_sq).
    const file = loadSafetensors(join(dir, 'resume-file.safetensors'));
    assert.equal(file.tensors.size, 2 * layout.length);
    assert.equal(file.metadata.format, 'lgrpo-adamw');
    assert.ok(file.tensors.has('model.norm.weight.exp_avg_sq'));
    a.dispose();
  });

  it('a constant lr is restored from the state; a schedule set here stays', () => {
    const p = new Float32Array(3), g = new Float32Array(3);
    const saved = new AdamW({ p }, { p: g }, { lr: 0.25 }).state();
    const constant = new AdamW({ p }, { p: g }, { lr: 1 });
    constant.loadState(saved);
    assert.equal(constant.lr, 0.25);
    const schedule = linearWarmup(1, 2);
    const scheduled = new AdamW({ p }, { p: g }, { lr: schedule });
    scheduled.loadState(saved);
    assert.equal(scheduled.lr, schedule);
  });

  it('rejects states that do not fit, naming the problem, and changes nothing', () => {
    const r = rng('mismatch');
    const layout = LAYOUT.slice(1);
    const params = randomParams(r, layout), grads = zeroGrads(params);
    const opt = new AdamW(params, grads, { lr: 1e-2, weightDecay: 0.1 });
    fillGrads(r, grads);
    opt.step();
    const good = opt.state();
    const goodMoments = good.moments as Map<string, { shape: number[]; expAvg: Float32Array; expAvgSq: Float32Array }>;
    const before = stateBits(good);
    const withMoments = (edit: (m: typeof goodMoments) => void): AdamWState => {
      const m = new Map([...goodMoments].map(([k, v]) => [k, { ...v }]));
      edit(m);
      return { ...good, moments: m };
    };
    const attempts: Array<[string, AdamWState, RegExp]> = [
      ['missing parameter', withMoments((m) => m.delete('model.norm.weight')), /^state: no state for 1 of the 7 parameters, first "model\.norm\.weight"/],
      ['extra parameter', withMoments((m) => m.set('extra.weight', { shape: [1], expAvg: new Float32Array(1), expAvgSq: new Float32Array(1) })), /^state: parameter "extra\.weight" is not one of this optimiser's parameters/],
      ['shape', withMoments((m) => { m.get('model.norm.weight')!.shape = [2, 4]; }), /^state: parameter "model\.norm\.weight" has shape \[2, 4\] in the state but \[8\] here/],
      ['length', withMoments((m) => { m.get('model.norm.weight')!.expAvgSq = new Float32Array(9); }), /^state: moments\["model\.norm\.weight"\]\.expAvgSq: has 9 values, the parameter has 8/],
      ['NaN moment', withMoments((m) => { const e = m.get('model.norm.weight')!; e.expAvg = e.expAvg.slice(); e.expAvg[3] = NaN; }), /expAvg: holds NaN or infinite values/],
      ['groups', { ...good, noDecay: good.noDecay.slice(1) }, /^state: parameter "model\.layers\.0\.input_layernorm\.weight" was subject to weight decay when saved but is exempt from it here/],
      ['step', { ...good, step: -1 }, /^state: step: expected a non-negative integer/],
      ['betas', { ...good, hyperparameters: { ...good.hyperparameters, betas: [0.9, 1] } }, /^state: hyperparameters\.betas: /],
    ];
    for (const [label, state, message] of attempts) {
      assert.throws(() => opt.loadState(state), { message }, label);
      assert.equal(stateBits(opt.state()), before, `${label}: a failed load changed the optimiser`);
    }

    // Files: another optimiser's state, a plain checkpoint, and a file whose tensors disagree with its metadata.
    const otherParams = randomParams(r, layout.slice(0, 3));
    const other = new AdamW(otherParams, zeroGrads(otherParams), { lr: 1e-2 });
    const otherPath = join(dir, 'other.safetensors');
    other.saveState(otherPath);
    assert.throws(() => opt.loadStateFile(otherPath), { message: new RegExp(`^${otherPath}: no state for 4 of the 7 parameters`) });
    const plain = join(dir, 'plain.safetensors');
    saveSafetensors(plain, { w: { dtype: 'f32', shape: [2], data: new Float32Array(2) } });
    assert.throws(() => opt.loadStateFile(plain), /not an AdamW state file/);
    assert.throws(() => AdamW.readStateFile(plain), /not an AdamW state file/);
    const file = loadSafetensors(otherPath);
    const tampered = join(dir, 'tampered.safetensors');
    file.tensors.delete('model.layers.0.input_layernorm.weight.exp_avg');
    saveSafetensors(tampered, file.tensors, { metadata: file.metadata });
    assert.throws(() => AdamW.readStateFile(tampered), /tensor "model\.layers\.0\.input_layernorm\.weight\.exp_avg" is missing/);
    assert.throws(() => opt.loadStateFile(join(dir, 'absent.safetensors')), /cannot open/);
    assert.equal(stateBits(opt.state()), before, 'a failed file load changed the optimiser');
    other.dispose();
    opt.dispose();
  });

  it('refuses a NaN or infinite gradient norm and leaves parameters, moments, step count and gradients untouched', () => {
    const r = rng('nan');
    const layout = LAYOUT.slice(1);
    const params = randomParams(r, layout), grads = zeroGrads(params);
    const opt = new AdamW(params, grads, { lr: 1e-2, weightDecay: 0.1, maxGradNorm: 0.1 });
    fillGrads(r, grads);
    opt.step();
    for (const bad of [NaN, Infinity, -Infinity]) {
      fillGrads(r, grads);
      grads.get('model.layers.0.mlp.down_proj.weight')![1234] = bad;
      const paramsBefore = copyOf(params), gradsBefore = copyOf(grads), stateBefore = stateBits(opt.state());
      assert.throws(() => opt.step(), (e: unknown) => {
        assert.ok(e instanceof NonFiniteGradError);
        assert.equal(e.parameter, 'model.layers.0.mlp.down_proj.weight');
        assert.equal(e.step, 2);
        assert.match(e.message, /gradient norm is (NaN|Infinity) at update 2; the first non-finite gradient is "model\.layers\.0\.mlp\.down_proj\.weight"\. Parameters, moments and step count are unchanged/);
        return true;
      });
      assertSameBits(params, paramsBefore, `${bad}: parameters`);
      assertSameBits(grads, gradsBefore, `${bad}: gradients`);
      assert.equal(stateBits(opt.state()), stateBefore, `${bad}: moments or step`);
      assert.equal(opt.stepCount, 1);
    }
    fillGrads(r, grads);
    assert.equal(opt.step().step, 2);
    opt.dispose();
  });

  it('validates its construction and the schedule values it is given', () => {
    const p = new Float32Array(4), g = new Float32Array(4);
    assert.throws(() => new AdamW({ p }, { p: g }, {} as never), { name: 'TypeError', message: /^lr: required/ });
    assert.throws(() => new AdamW({ p }, { p: g }, { lr: -1 }), { name: 'RangeError', message: /^lr: / });
    assert.throws(() => new AdamW({ p }, { p: g }, { lr: 1, betas: [0.9, 1] }), { name: 'RangeError', message: /^betas: / });
    assert.throws(() => new AdamW({ p }, { p: g }, { lr: 1, eps: 0 }), { name: 'RangeError', message: /^eps: / });
    assert.throws(() => new AdamW({ p }, { p: g }, { lr: 1, weightDecay: NaN }), { name: 'RangeError', message: /^weightDecay: / });
    assert.throws(() => new AdamW({ p }, { p: g }, { lr: 1, maxGradNorm: -1 }), { name: 'RangeError', message: /^maxGradNorm: / });
    assert.throws(() => new AdamW({ p }, {}, { lr: 1 }), { name: 'TypeError', message: /^grads: no gradient for parameter "p"/ });
    assert.throws(() => new AdamW({ p }, { p: g, q: g }, { lr: 1 }), { name: 'TypeError', message: /^grads\["q"\]: not one of the parameters/ });
    assert.throws(() => new AdamW({ p }, { p: new Float32Array(3) }, { lr: 1 }), { name: 'RangeError', message: /^grads\["p"\]: has 3 values, the parameter has 4/ });
    assert.throws(() => new AdamW({ p: new Float64Array(4) as never }, { p: g }, { lr: 1 }), { name: 'TypeError', message: /^params\["p"\]: expected a Float32Array/ });
    assert.throws(() => new AdamW({ p: Tensor.from(new Int32Array(4)) as never }, { p: g }, { lr: 1 }), { name: 'TypeError', message: /^params\["p"\]: expected dtype f32/ });
    assert.throws(() => new AdamW([['p', p], ['p', p]] as Array<[string, Float32Array]>, { p: g }, { lr: 1 }), { name: 'TypeError', message: /duplicate name/ });
    // Tied weights listed twice, or a gradient over a parameter's memory, would break the fused update.
    const arena = new Float32Array(10);
    assert.throws(() => new AdamW({ a: arena.subarray(0, 5), b: arena.subarray(4, 9) }, { a: new Float32Array(5), b: new Float32Array(5) }, { lr: 1 }),
      { name: 'RangeError', message: /^params\["b"\]: shares memory with params\["a"\]/ });
    assert.throws(() => new AdamW({ a: p }, { a: p }, { lr: 1 }), { name: 'RangeError', message: /shares memory/ });
    // Adjacent views of one arena are fine.
    new AdamW({ a: arena.subarray(0, 5), b: arena.subarray(5, 10) }, { a: new Float32Array(5), b: new Float32Array(5) }, { lr: 1 }).dispose();

    const opt = new AdamW({ p }, { p: g }, { lr: (t) => (t === 2 ? NaN : 0.1) });
    opt.step();
    const before = p.slice();
    assert.throws(() => opt.step(), { name: 'RangeError', message: /^lr: the schedule returned NaN for step 2/ });
    assert.deepEqual(p, before);
    assert.equal(opt.stepCount, 1);
    opt.dispose();
    assert.throws(() => opt.step(), /disposed/);
  });

  it('memorises random labels with softmax regression: the loss falls to near zero', () => {
    // 24 points in 40 dimensions are linearly separable whatever their labels, so the
    // cross-entropy can approach 0 — if the optimiser works.
    const r = rng('memorise');
    const n = 24, d = 40, k = 5;
    const x = r.normals(n * d), y = r.ints(n, 0, k);
    const w = r.normals(k * d, 0.01), b = new Float32Array(k);
    const gw = new Float32Array(k * d), gb = new Float32Array(k);
    const opt = new AdamW({ 'linear.weight': w, 'linear.bias': b }, { 'linear.weight': gw, 'linear.bias': gb },
      { lr: linearWarmup(0.05, 10, 300, { schedule: 'cosine' }), weightDecay: 1e-4, maxGradNorm: 5 });
    const lossAndGrad = (): number => {
      gw.fill(0);
      gb.fill(0);
      let loss = 0;
      const z = new Float64Array(k);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < k; c++) {
          let s = b[c];
          for (let j = 0; j < d; j++) s += w[c * d + j] * x[i * d + j];
          z[c] = s;
        }
        const m = Math.max(...z);
        let sum = 0;
        for (let c = 0; c < k; c++) sum += Math.exp(z[c] - m);
        loss += (Math.log(sum) + m - z[y[i]]) / n;
        for (let c = 0; c < k; c++) {
          const dz = (Math.exp(z[c] - m) / sum - (c === y[i] ? 1 : 0)) / n;
          gb[c] += dz;
          for (let j = 0; j < d; j++) gw[c * d + j] += dz * x[i * d + j];
        }
      }
      return loss;
    };
    const first = lossAndGrad();
    let loss = first;
    for (let t = 0; t < 300; t++) {
      opt.step();
      loss = lossAndGrad();
    }
    assert.ok(first > 1, `initial loss ${first} should be about ln 5`);
    assert.ok(loss < 0.01, `loss fell only from ${first} to ${loss}`);
    opt.dispose();
  });
});

describe('linearWarmup', () => {
  const at = (f: (t: number) => number, steps: number[]) => steps.map(f);
  it('matches transformers: first warmup update at 0, the peak after warmupSteps updates', () => {
    assertClose(at(linearWarmup(1, 4), [1, 2, 3, 4, 5, 6, 1000]), [0, 0.25, 0.5, 0.75, 1, 1, 1], { atol: 1e-15 });
    assertClose(at(linearWarmup(2, 0), [1, 2]), [2, 2], { atol: 0 });
  });
  it('linear decay reaches 0 after totalSteps updates and stays there', () => {
    assertClose(at(linearWarmup(2, 2, 6, { schedule: 'linear' }), [1, 2, 3, 4, 5, 6, 7, 50]), [0, 1, 2, 1.5, 1, 0.5, 0, 0], { atol: 1e-15 });
    assertClose(at(linearWarmup(1, 0, 4, { schedule: 'linear' }), [1, 2, 3, 4, 5]), [1, 0.75, 0.5, 0.25, 0], { atol: 1e-15 });
  });
  it('cosine decay follows half a cosine and does not climb again after totalSteps', () => {
    // 0.5·(1 + cos(π·k/4)) for k = 0..4, written out.
    assertClose(at(linearWarmup(1, 0, 4, { schedule: 'cosine' }), [1, 2, 3, 4, 5, 6, 9]),
      [1, 0.8535533905932737, 0.5, 0.14644660940672624, 0, 0, 0], { atol: 1e-15 });
    assertClose(at(linearWarmup(3, 2, 6, { schedule: 'cosine' }), [1, 2, 3, 5]), [0, 1.5, 3, 1.5], { atol: 1e-14 });
  });
  it('rejects bad arguments', () => {
    assert.throws(() => linearWarmup(1, 2, undefined, { schedule: 'linear' }), { name: 'TypeError', message: /^totalSteps: required/ });
    assert.throws(() => linearWarmup(1, 5, 4), { name: 'RangeError', message: /^totalSteps: 4 is less than warmupSteps 5/ });
    assert.throws(() => linearWarmup(-1, 0), { name: 'RangeError', message: /^peak: / });
    assert.throws(() => linearWarmup(1, 1.5), { name: 'RangeError', message: /^warmupSteps: / });
    assert.throws(() => linearWarmup(1, 0, 3, { schedule: 'exp' as never }), { name: 'TypeError', message: /^schedule: / });
    assert.throws(() => linearWarmup(1, 0)(0), { name: 'RangeError', message: /^step: / });
  });
});

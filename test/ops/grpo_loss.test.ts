import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor, grpoLoss, grpoLossWeights, type Aggregation, type GrpoLossInput } from '../../src/index.js';
import { addon } from '../../src/native.js';
import { KL_CLAMP, grpoLossReference, type GrpoReferenceInput } from '../reference/grpo_loss.js';
import { ON_GPU, TEST_DEVICE, assertClose, onDevice, rng, values, type Rng } from '../helpers.js';

const MODES: readonly Aggregation[] = ['grpo', 'dapo', 'dr_grpo', 'lambda'];

interface Batch {
  B: number;
  T: number;
  groups: number;
  logprobs: Float32Array;
  oldLogprobs: Float32Array;
  refLogprobs: Float32Array;
  advantages: Float32Array;
  mask: Uint8Array;
  groupIds: Int32Array;
}

interface Shape {
  epsLow?: number;
  epsHigh?: number;
  dualClip?: number;
  maxT?: number;
  /** a fixed row length instead of a random odd one up to maxT */
  T?: number;
}

/**
 * A random batch: ragged groups in shuffled order (groups of one included), odd T,
 * prefix masks and a few scattered ones, zero-length rows, exactly-zero advantages,
 * ratios spread across both clip bounds, and padding holding large finite values (a
 * ratio that overflows f32 there must not leak into the loss). Tokens whose ratio (or
 * ref − logp) lies within 1e-4 of a kink of the loss are nudged away from it, so float32
 * rounding cannot put kernel and reference on different branches and the finite
 * differences below never straddle a kink.
 */
function makeBatch(r: Rng, shape: Shape = {}): Batch {
  const groups = r.int(1, 8);
  const ids: number[] = [];
  for (let g = 0; g < groups; g++) {
    const size = r.next() < 0.2 ? 1 : r.int(2, 7);
    for (let k = 0; k < size; k++) ids.push(g);
  }
  r.shuffle(ids);
  const B = ids.length;
  const T = shape.T ?? 2 * r.int(0, (shape.maxT ?? 61) >> 1) + 1;
  const logprobs = new Float32Array(B * T), oldLogprobs = new Float32Array(B * T), refLogprobs = new Float32Array(B * T);
  const mask = new Uint8Array(B * T);
  const advantages = new Float32Array(B);
  for (let i = 0; i < B; i++) {
    advantages[i] = r.next() < 0.15 ? 0 : r.normal();
    const len = r.next() < 0.15 ? 0 : r.int(1, T + 1);
    const scattered = r.next() < 0.25;
    for (let t = 0; t < T; t++) {
      const k = i * T + t;
      mask[k] = scattered ? (r.next() < 0.6 ? 1 : 0) : t < len ? 1 : 0;
      if (mask[k]) {
        oldLogprobs[k] = -Math.abs(r.normal()) * 2 - 0.05;
        // mostly near-on-policy ratios, and some far ones (clipped, dual-clipped)
        logprobs[k] = oldLogprobs[k] + r.normal() * (r.next() < 0.2 ? 1 : 0.25);
        refLogprobs[k] = logprobs[k] + r.normal() * 0.5;
      } else {
        logprobs[k] = r.uniform(-100, 0);
        oldLogprobs[k] = r.uniform(-100, 0);
        refLogprobs[k] = r.uniform(-100, 0);
      }
    }
  }
  const kinks = [1 - (shape.epsLow ?? 0.2), 1 + (shape.epsHigh ?? 0.2), ...(shape.dualClip ? [shape.dualClip] : [])];
  for (let k = 0; k < B * T; k++) {
    while (kinks.some((b) => Math.abs(Math.exp(logprobs[k] - oldLogprobs[k]) - b) < 1e-4))
      logprobs[k] = Math.fround(logprobs[k] + 3e-3);
    while (Math.abs(Math.abs(refLogprobs[k] - logprobs[k]) - KL_CLAMP) < 1e-3) refLogprobs[k] = Math.fround(refLogprobs[k] + 0.01);
  }
  return { B, T, groups, logprobs, oldLogprobs, refLogprobs, advantages, mask, groupIds: Int32Array.from(ids) };
}

type Options = Omit<GrpoLossInput, 'logprobs' | 'oldLogprobs' | 'refLogprobs' | 'advantages' | 'mask' | 'groupIds'> & {
  withRef?: boolean;
  maskF32?: boolean;
};

function run(b: Batch, o: Options) {
  const { withRef, maskF32, ...opts } = o;
  const mask = maskF32 ? onDevice(Float32Array.from(b.mask), [b.B, b.T]) : onDevice(b.mask, [b.B, b.T]);
  return grpoLoss({
    logprobs: onDevice(b.logprobs, [b.B, b.T]),
    oldLogprobs: onDevice(b.oldLogprobs, [b.B, b.T]),
    refLogprobs: withRef ? onDevice(b.refLogprobs, [b.B, b.T]) : undefined,
    advantages: onDevice(b.advantages),
    mask,
    groupIds: onDevice(b.groupIds),
    groups: b.groups,
    ...opts,
  });
}

function reference(b: Batch, o: Options, logprobs: ArrayLike<number> = b.logprobs): ReturnType<typeof grpoLossReference> {
  const { withRef, maskF32: _, weights, dWeightsDLambda, ...opts } = o;
  const input: GrpoReferenceInput = {
    ...opts,
    B: b.B, T: b.T, logprobs, oldLogprobs: b.oldLogprobs, refLogprobs: withRef ? b.refLogprobs : undefined,
    advantages: b.advantages, mask: b.mask, groupIds: b.groupIds, groups: b.groups,
    weights: weights as ArrayLike<number> | undefined, dWeightsDLambda: dWeightsDLambda as ArrayLike<number> | undefined,
  };
  return grpoLossReference(input);
}

/** Rows `rows` of a batch, in that order. */
function takeRows(b: Batch, rows: number[]): Batch {
  const T = b.T;
  const pick = <A extends Float32Array | Uint8Array>(src: A, make: (n: number) => A): A => {
    const out = make(rows.length * T);
    rows.forEach((row, j) => out.set(src.subarray(row * T, (row + 1) * T), j * T));
    return out;
  };
  return {
    B: rows.length, T, groups: b.groups,
    logprobs: pick(b.logprobs, (n) => new Float32Array(n)),
    oldLogprobs: pick(b.oldLogprobs, (n) => new Float32Array(n)),
    refLogprobs: pick(b.refLogprobs, (n) => new Float32Array(n)),
    mask: pick(b.mask, (n) => new Uint8Array(n)),
    advantages: Float32Array.from(rows, (i) => b.advantages[i]),
    groupIds: Int32Array.from(rows, (i) => b.groupIds[i]),
  };
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function randomOptions(r: Rng, aggregation: Aggregation): Options {
  const o: Options = { aggregation, epsLow: 0.2, epsHigh: r.next() < 0.5 ? 0.2 : 0.28 };
  if (aggregation === 'lambda') o.lambda = r.uniform(-1.5, 2.5);
  if (aggregation === 'dr_grpo' && r.next() < 0.5) o.maxLength = r.int(64, 200);
  if (r.next() < 0.5) o.dualClip = r.next() < 0.5 ? 1.5 : 3;
  if (r.next() < 0.6) {
    o.withRef = true;
    o.beta = r.next() < 0.8 ? r.uniform(0.01, 0.2) : 0;
  }
  return o;
}

function checkAgainstReference(b: Batch, o: Options, label: string) {
  const out = run(b, o);
  const ref = reference(b, o);
  const grad = values(out.gradLogprobs);
  const scale = maxAbs(ref.gradLogprobs);
  assertClose(out.loss, ref.loss, { atol: 1e-6, rtol: 2e-5 }, `${label} loss`);
  assertClose(grad, ref.gradLogprobs, { atol: 1e-6 * scale, rtol: 2e-5 }, `${label} gradLogprobs`);
  // A row's loss can be all KL (advantage 0): kl = e^d − d − 1 in float32 cancels for small d
  // (as in TRL), leaving a few ulps of 1 per token, times β and the row's weight.
  const klFloor = 4e-7 * (o.beta ?? 0) * Math.max(1, maxAbs(ref.weights));
  assertClose(values(out.seqLoss), ref.seqLoss, { atol: 1e-6 * Math.max(maxAbs(ref.seqLoss), 1e-3) + klFloor, rtol: 2e-5 }, `${label} seqLoss`);
  assertClose(values(out.weights), ref.weights, { atol: 1e-6, rtol: 2e-6 }, `${label} weights`);
  assertClose(values(out.dWeightsDLambda), ref.dWeightsDLambda, { atol: 2e-6, rtol: 2e-5 }, `${label} dWeightsDLambda`);
  assertClose(values(out.lengths), ref.lengths, { atol: 0, rtol: 0 }, `${label} lengths`);
  assertClose(out.normalizer, ref.normalizer, { atol: 0, rtol: 1e-15 }, `${label} normalizer`);
  assertClose(out.gradLambda, ref.gradLambda, { atol: 1e-6, rtol: 1e-4 }, `${label} gradLambda`);
  if (o.aggregation !== 'lambda') assert.equal(out.gradLambda, 0);
  const s = out.stats, rs = ref.stats;
  assertClose(
    [s.clipFracLow, s.clipFracHigh, s.dualClipFrac, s.tokens, s.meanLength],
    [rs.clipFracLow, rs.clipFracHigh, rs.dualClipFrac, rs.tokens, rs.meanLength],
    { atol: 1e-12, rtol: 1e-12 }, `${label} counting stats`);
  assertClose([s.ratioMean, s.klMean], [rs.ratioMean, rs.klMean], { atol: 1e-6, rtol: 1e-5 }, `${label} mean stats`);
  let empty = 0, zeroAdv = 0, wMin = Infinity, wMax = -Infinity;
  for (let i = 0; i < b.B; i++) {
    zeroAdv += b.advantages[i] === 0 ? 1 : 0;
    if (ref.lengths[i] === 0) empty++;
    else {
      wMin = Math.min(wMin, ref.weights[i]);
      wMax = Math.max(wMax, ref.weights[i]);
    }
  }
  assert.equal(s.emptyRows, empty);
  assert.equal(s.degenerateRows, zeroAdv);
  if (empty < b.B) assertClose([s.weightMin, s.weightMax], [wMin, wMax], { atol: 1e-6, rtol: 1e-6 }, `${label} weight range`);
  return { out, ref };
}

describe(`grpoLoss on ${TEST_DEVICE}`, () => {
  for (const aggregation of MODES) {
    it(`matches the float64 reference: aggregation=${aggregation} (ragged groups and masks, dual clip, KL)`, () => {
      const r = rng('grpoLoss');
      for (let trial = 0; trial < 9; trial++) {
        const o = randomOptions(r, aggregation);
        // Trial 7 has long rows: vector lane sums are flushed into double every 512 tokens.
        // Trial 8 is longer than one CUDA block's 2048-token chunk (3 chunks, the last partial).
        const b = makeBatch(r, { ...o, maxT: trial === 7 ? 1201 : undefined, T: trial === 8 ? 4099 : undefined });
        checkAgainstReference(b, o, `${aggregation} trial ${trial} (B=${b.B}, T=${b.T})`);
      }
    });
  }

  it('covers clipping on both sides and the dual clip in those batches', () => {
    // Guards the test data: if no token were clipped, the comparisons above would not test clipping.
    const r = rng();
    const o: Options = { aggregation: 'dapo', dualClip: 1.3 };
    let low = 0, high = 0, dual = 0;
    for (let trial = 0; trial < 6; trial++) {
      const { stats } = run(makeBatch(r, o), o);
      low += stats.clipFracLow;
      high += stats.clipFracHigh;
      dual += stats.dualClipFrac;
    }
    assert.ok(low > 0 && high > 0 && dual > 0, `clip fractions low ${low}, high ${high}, dual ${dual}`);
  });

  it('has gradLogprobs matching central differences of the float64 reference loss', () => {
    const r = rng();
    for (const aggregation of MODES) {
      for (let trial = 0; trial < 2; trial++) {
        const o: Options = { aggregation, lambda: 0.9, dualClip: trial ? 2 : undefined, withRef: true, beta: 0.1 };
        const b = makeBatch(r, o);
        const grad = values(run(b, o).gradLogprobs);
        const masked = [...b.mask.keys()].filter((k) => b.mask[k]);
        const unmasked = [...b.mask.keys()].filter((k) => !b.mask[k]);
        // tokens where the dual clip (or, without it, the plain clip) is active, then random ones
        const c = o.dualClip ?? 1.2;
        const active = masked.filter((k) => Math.exp(b.logprobs[k] - b.oldLogprobs[k]) > c && b.advantages[Math.floor(k / b.T)] !== 0);
        const picks = [...r.shuffle(active).slice(0, 3), ...r.shuffle(masked).slice(0, 5), ...r.shuffle(unmasked).slice(0, 1)];
        const lp = Float64Array.from(b.logprobs);
        const h = 1e-5;
        for (const k of picks) {
          const saved = lp[k];
          lp[k] = saved + h;
          const up = reference(b, o, lp).loss;
          lp[k] = saved - h;
          const down = reference(b, o, lp).loss;
          lp[k] = saved;
          const fd = (up - down) / (2 * h);
          assertClose(grad[k], fd, { atol: 1e-9, rtol: 1e-4 }, `${aggregation} dL/dlogp[${k}] (mask ${b.mask[k]})`);
        }
      }
    }
  });

  it('has gradLambda matching central differences in lambda of the whole reference loss', () => {
    const r = rng();
    let checked = 0;
    for (let trial = 0; trial < 6; trial++) {
      const lambda = r.uniform(-1.5, 2.5), h = 1e-4;
      const o: Options = { aggregation: 'lambda', lambda, withRef: trial % 2 === 0, beta: trial % 2 === 0 ? 0.05 : 0 };
      const b = makeBatch(r, o);
      const out = run(b, o);
      // Weights are recomputed from λ ± h inside each reference call.
      const fd = (reference(b, { ...o, lambda: lambda + h }).loss - reference(b, { ...o, lambda: lambda - h }).loss) / (2 * h);
      assertClose(out.gradLambda, fd, { atol: 1e-7, rtol: 1e-4 }, `gradLambda (trial ${trial}, lambda ${lambda})`);
      if (Math.abs(fd) > 1e-4) checked++;
    }
    assert.ok(checked >= 2, 'the FD check needs batches with a non-trivial gradLambda');
  });

  it('equals dapo in lambda mode at lambda = 0 (loss and gradients)', () => {
    const r = rng();
    for (let trial = 0; trial < 3; trial++) {
      const b = makeBatch(r);
      const opts: Options = { aggregation: 'dapo', withRef: true, beta: 0.04, dualClip: 3 };
      const dapo = run(b, opts);
      const lam = run(b, { ...opts, aggregation: 'lambda', lambda: 0 });
      assertClose(lam.loss, dapo.loss, { atol: 0, rtol: 1e-12 }, 'loss');
      assertClose(values(lam.gradLogprobs), values(dapo.gradLogprobs), { atol: 0, rtol: 0 }, 'gradLogprobs');
      assert.equal(lam.normalizer, dapo.normalizer);
    }
  });

  it('is the per-sequence mean of token means in grpo mode, over all B rows (empty rows add 0 but count)', () => {
    const r = rng();
    for (let trial = 0; trial < 3; trial++) {
      const b = makeBatch(r);
      b.mask.fill(0, 0, b.T);  // row 0 has no response token
      const opts: Options = { withRef: true, beta: 0.05, aggregation: 'grpo' };
      const grpo = run(b, opts);
      const grad = values(grpo.gradLogprobs);
      let mean = 0, magnitude = 0;
      for (let i = 0; i < b.B; i++) {
        // dapo on one row is that row's token mean (N = |o_i|; a row with no tokens gives 0)
        const single = run(takeRows(b, [i]), { ...opts, aggregation: 'dapo' });
        mean += single.loss / b.B;
        magnitude += Math.abs(single.loss) / b.B;
        const expected = Array.from(values(single.gradLogprobs), (g) => g / b.B);
        assertClose(grad.subarray(i * b.T, (i + 1) * b.T), expected, { atol: 1e-12, rtol: 1e-6 }, `row ${i} gradient`);
      }
      // w_i = 1/|o_i| is stored in f32 (relative error 6e-8 per row); rows of both signs cancel
      assertClose(grpo.loss, mean, { atol: 1e-7 * magnitude, rtol: 1e-6 }, 'loss');
      assert.equal(grpo.normalizer, b.B);
    }
  });

  it('is the token sum over B·maxLength in dr_grpo mode', () => {
    const r = rng();
    const b = makeBatch(r);
    const dapo = run(b, { aggregation: 'dapo' });
    for (const maxLength of [undefined, 4096]) {
      const dr = run(b, { aggregation: 'dr_grpo', maxLength });
      const n = b.B * (maxLength ?? b.T);
      assert.equal(dr.normalizer, n);
      assertClose(dr.loss, (dapo.loss * dapo.normalizer) / n, { atol: 1e-12, rtol: 1e-6 }, 'loss');
    }
  });

  for (const aggregation of MODES) {
    it(`adds micro-batches up to the whole batch given whole-step weights and normaliser: ${aggregation}`, () => {
      const r = rng();
      for (let trial = 0; trial < 3; trial++) {
        const o: Options = { aggregation, lambda: 1.3, maxLength: 200, withRef: true, beta: 0.05, dualClip: 3 };
        let b = makeBatch(r, o);
        // at least three rows, and (for 'lambda') a λ-gradient that is not trivially 0
        while (b.B < 3 || (aggregation === 'lambda' && run(b, o).gradLambda === 0)) b = makeBatch(r, o);
        const whole = run(b, o);
        const lengths = values(whole.lengths) as Float32Array;
        const step = grpoLossWeights(lengths, b.groupIds, { aggregation, lambda: 1.3, maxLength: 200, groups: b.groups });
        // grpoLossWeights computes exactly what grpoLoss computes for the whole batch.
        assertClose(step.weights, values(whole.weights), { atol: 0, rtol: 0 }, 'grpoLossWeights weights');
        assertClose(step.dWeightsDLambda, values(whole.dWeightsDLambda), { atol: 0, rtol: 0 }, 'grpoLossWeights dWeightsDLambda');
        assert.equal(step.normalizer, whole.normalizer);

        const order = r.shuffle([...Array(b.B).keys()]);
        const parts = trial === 0 ? 2 : 3;
        const cuts = [0, ...Array.from({ length: parts - 1 }, (_, p) => Math.round(((p + 1) * b.B) / parts)), b.B];
        let loss = 0, gradLambda = 0;
        const grad = new Float32Array(b.B * b.T);
        const wholeGrad = values(whole.gradLogprobs);
        for (let p = 0; p < parts; p++) {
          const rows = order.slice(cuts[p], cuts[p + 1]);
          const mb: Options = { ...o, normalizer: step.normalizer };
          // weights as CPU arrays or on the inputs' device: both are accepted
          const w = Float32Array.from(rows, (i) => step.weights[i]);
          mb.weights = p === 0 ? onDevice(w) : w;
          if (aggregation === 'lambda') mb.dWeightsDLambda = Float32Array.from(rows, (i) => step.dWeightsDLambda[i]);
          const part = run(takeRows(b, rows), mb);
          loss += part.loss;
          gradLambda += part.gradLambda;
          const g = values(part.gradLogprobs);
          rows.forEach((row, j) => grad.set(g.subarray(j * b.T, (j + 1) * b.T), row * b.T));
        }
        assertClose(loss, whole.loss, { atol: 1e-12, rtol: 1e-9 }, 'summed loss');
        assertClose(gradLambda, whole.gradLambda, { atol: 1e-12, rtol: 1e-9 }, 'summed gradLambda');
        assertClose(grad, wholeGrad, { atol: 0, rtol: 0 }, 'concatenated gradLogprobs');
        if (aggregation === 'lambda') assert.notEqual(whole.gradLambda, 0);
      }
    });
  }

  it('gives the same results for u8 and f32 masks', () => {
    const r = rng();
    const o: Options = { aggregation: 'lambda', lambda: 0.7, withRef: true, beta: 0.1 };
    const b = makeBatch(r, o);
    const a = run(b, o), f = run(b, { ...o, maskF32: true });
    assert.equal(a.loss, f.loss);
    assert.equal(a.gradLambda, f.gradLambda);
    assertClose(values(a.gradLogprobs), values(f.gradLogprobs), { atol: 0, rtol: 0 }, 'gradLogprobs');
    assert.deepEqual(a.stats, f.stats);
  });

  it('keeps the KL term finite when ref − logp is huge (clamped at ±20), and flat there', () => {
    const r = rng();
    // Random batches can hold no response token at all (every row of length 0): draw again.
    let b = makeBatch(r);
    while (b.mask.indexOf(1) < 0) b = makeBatch(r);
    const k = b.mask.indexOf(1);
    b.refLogprobs[k] = 0;
    b.logprobs[k] = -80;  // ref − logp = 80: e^80 would overflow f32
    b.oldLogprobs[k] = -80.1;
    const k2 = b.mask.indexOf(1, k + 1);
    if (k2 >= 0) { b.refLogprobs[k2] = -90; b.logprobs[k2] = -1; b.oldLogprobs[k2] = -1.05; }  // ref − logp = −89
    const o: Options = { aggregation: 'dapo', withRef: true, beta: 0.1 };
    const { out, ref } = checkAgainstReference(b, o, 'huge KL');
    assert.ok(Number.isFinite(out.loss) && Number.isFinite(out.stats.klMean));
    // beyond the clamp only the surrogate moves the gradient: −A ρ (w/N) where unclipped
    const rho = Math.exp(b.logprobs[k] - b.oldLogprobs[k]);
    const i = Math.floor(k / b.T);
    const surrogate = rho * b.advantages[i] <= Math.min(Math.max(rho, 0.8), 1.2) * b.advantages[i] ? -b.advantages[i] * rho : 0;
    assertClose(values(out.gradLogprobs)[k], surrogate / ref.normalizer, { atol: 1e-9, rtol: 1e-5 }, 'gradient at the clamp');
  });

  // Issue 12 item 6: ρ = e^(logp − oldLogp) overflowed f32 above ~88.7, and for A < 0 the
  // loss was +Infinity from finite inputs; now the log-ratio is clamped at ±20 (as verl).
  it('clamps the log-ratio at ±20: finite loss, the ρ branch flat beyond the clamp', () => {
    const r = rng();
    let b = makeBatch(r);
    // Random batches can be tiny: draw until one has a few response tokens with A ≠ 0.
    const usable = (x: Batch) => x.mask.filter((m, k) => m && x.advantages[Math.floor(k / x.T)] !== 0).length;
    for (let tries = 0; tries < 50 && usable(b) < 8; tries++) b = makeBatch(r);
    const changed: number[] = [];
    for (let i = 0; i < b.B; i++) {
      if (b.advantages[i] === 0) continue;
      for (let t = 0; t < b.T && changed.length < 40; t++) {
        const k = i * b.T + t;
        if (!b.mask[k] || (t % 2 === 1 && usable(b) > 16)) continue;
        const gap = [100, 50, -100, 25][changed.length % 4];
        b.oldLogprobs[k] = -1 - r.next();
        b.logprobs[k] = b.oldLogprobs[k] + gap;
        changed.push(k);
      }
    }
    assert.ok(changed.length >= 4, 'batch too small to place clamped tokens');
    for (const aggregation of MODES) {
      const { out } = checkAgainstReference(b, { aggregation, lambda: 0.3 }, `clamped ratio ${aggregation}`);
      assert.ok(Number.isFinite(out.loss), `${aggregation}: loss ${out.loss}`);
      const g = values(out.gradLogprobs);
      for (const k of changed) assert.ok(g[k] === 0, `${aggregation}: gradient ${g[k]} at clamped token ${k}`);
    }
  });

  it('rejects a normalizer or advantages that would overflow f32 instead of returning Inf', () => {
    const B = 2, T = 3;
    const base = {
      logprobs: new Float32Array(B * T).fill(-1), oldLogprobs: new Float32Array(B * T).fill(-1.1), advantages: Float32Array.of(1, -1),
      mask: new Uint8Array(B * T).fill(1), groupIds: Int32Array.of(0, 0), aggregation: 'dapo' as const,
    };
    assert.throws(() => grpoLoss({ ...base, normalizer: 1e-300 }), (e: Error) => e instanceof RangeError && /normalizer/.test(e.message));
    assert.throws(() => grpoLoss({ ...base, normalizer: 1e-40 }), (e: Error) => e instanceof RangeError && /normalizer/.test(e.message));
    assert.ok(Number.isFinite(grpoLoss({ ...base, normalizer: 1e-30 }).loss));
    // The binding checks too (w_i/N formed in f32), for callers of the raw addon.
    const t = (a: Float32Array | Uint8Array | Int32Array, shape: number[], dtype: string) => ({ dtype, shape, device: 'cpu', data: a });
    assert.throws(() => addon().grpoLoss(t(base.logprobs, [B, T], 'f32'), t(base.oldLogprobs, [B, T], 'f32'), null,
      t(base.advantages, [B], 'f32'), t(base.mask, [B, T], 'u8'), t(base.groupIds, [B], 'i32'), { aggregation: 'dapo', normalizer: 1e-300 }),
    (e: Error) => e instanceof RangeError && /normalizer/.test(e.message));
    // Finite advantages whose loss overflows f32 are an error naming them.
    const huge = { ...base, logprobs: new Float32Array(B * T).fill(19), oldLogprobs: new Float32Array(B * T).fill(0), advantages: Float32Array.of(-3e38, -3e38) };
    assert.throws(() => grpoLoss(huge), (e: Error) => e instanceof RangeError && /advantages: the loss overflows/.test(e.message));
  });

  it('handles an all-padding batch and an empty batch', () => {
    const r = rng();
    const b = makeBatch(r);
    b.mask.fill(0);
    for (const aggregation of MODES) {
      const out = run(b, { aggregation, lambda: 1 });
      assert.equal(out.loss, 0);
      assert.equal(out.gradLambda, 0);
      assert.equal(maxAbs(values(out.gradLogprobs)), 0);
      assert.equal(out.stats.tokens, 0);
      assert.equal(out.stats.emptyRows, b.B);
    }
    const empty = grpoLoss({
      logprobs: onDevice(new Float32Array(0), [0, 5]), oldLogprobs: onDevice(new Float32Array(0), [0, 5]),
      advantages: onDevice(new Float32Array(0)), mask: onDevice(new Uint8Array(0), [0, 5]), groupIds: onDevice(new Int32Array(0)),
      aggregation: 'lambda', lambda: 1, groups: 0,
    });
    assert.equal(empty.loss, 0);
    assert.equal(values(empty.gradLogprobs).length, 0);
  });

  it('rejects NaN and Inf anywhere in the inputs, padding included, naming the input and row', () => {
    const r = rng();
    let b = makeBatch(r);
    while (b.B < 3 || b.mask.indexOf(0, 2 * b.T) < 0) b = makeBatch(r);
    const padding = b.mask.indexOf(0, 2 * b.T);
    const row = Math.floor(padding / b.T);
    const cases: [keyof Batch, number, RegExp][] = [
      ['logprobs', NaN, new RegExp(`^logprobs: row ${row} `)],
      ['oldLogprobs', Infinity, new RegExp(`^oldLogprobs: row ${row} `)],
      ['refLogprobs', -Infinity, new RegExp(`^refLogprobs: row ${row} `)],
    ];
    for (const [name, bad, pattern] of cases) {
      const array = b[name] as Float32Array;
      const saved = array[padding];
      array[padding] = bad;
      assert.throws(() => run(b, { aggregation: 'dapo', withRef: true, beta: 0.1 }), (e: Error) => e instanceof RangeError && pattern.test(e.message), `${name} in padding`);
      array[padding] = saved;
    }
    const masked = b.mask.indexOf(1);
    if (masked >= 0) {
      b.logprobs[masked] = NaN;
      assert.throws(() => run(b, { aggregation: 'grpo' }), (e: Error) => e instanceof RangeError && /^logprobs: row/.test(e.message));
      b.logprobs[masked] = -1;
    }
    b.advantages[1] = NaN;
    assert.throws(() => run(b, { aggregation: 'grpo' }), (e: Error) => e instanceof RangeError && /^advantages: element 1 /.test(e.message));
    b.advantages[1] = 0.5;
    b.mask[2 * b.T - 1] = 2;
    assert.throws(() => run(b, { aggregation: 'grpo' }), (e: Error) => e instanceof RangeError && /^mask: row 1 holds a value other than 0 or 1/.test(e.message));
    b.mask[2 * b.T - 1] = 1;
    const half = Float32Array.from(b.mask);
    half[2 * b.T] = 0.5;
    assert.throws(
      () => grpoLoss({
        logprobs: onDevice(b.logprobs, [b.B, b.T]), oldLogprobs: onDevice(b.oldLogprobs, [b.B, b.T]),
        advantages: onDevice(b.advantages), mask: onDevice(half, [b.B, b.T]),
        groupIds: onDevice(b.groupIds), groups: b.groups, aggregation: 'dapo',
      }),
      (e: Error) => e instanceof RangeError && /^mask: row 2 /.test(e.message),
    );
  });

  it('finds NaN/Inf in a response token, an all-padding stretch and a row tail alike', () => {
    // T = 37: tokens 0-31 go through 8-wide vectors on the CPU (16-23 all padding here), 32-36 are the tail.
    const B = 4, T = 37;
    const b: Batch = {
      B, T, groups: 1, logprobs: new Float32Array(B * T).fill(-1), oldLogprobs: new Float32Array(B * T).fill(-1.1),
      refLogprobs: new Float32Array(B * T).fill(-0.9), advantages: new Float32Array([1, -1, 0.5, 2]),
      mask: new Uint8Array(B * T), groupIds: new Int32Array(B),
    };
    for (let i = 0; i < B; i++) b.mask.fill(1, i * T, i * T + 5);
    assert.doesNotThrow(() => run(b, { aggregation: 'dapo', withRef: true, beta: 0.1 }));
    for (const name of ['logprobs', 'oldLogprobs', 'refLogprobs'] as const) {
      for (const t of [3, 20, 36]) {
        for (const bad of [NaN, Infinity]) {
          const k = 2 * T + t;
          const saved = b[name][k];
          b[name][k] = bad;
          assert.throws(
            () => run(b, { aggregation: 'dapo', withRef: true, beta: 0.1 }),
            (e: Error) => e instanceof RangeError && e.message.startsWith(`${name}: row 2 `),
            `${name}[2, ${t}] = ${bad}`,
          );
          b[name][k] = saved;
        }
      }
    }
    // Finite values whose difference overflows f32 are not an input error.
    b.logprobs[2 * T + 20] = -3e38;
    b.oldLogprobs[2 * T + 20] = 3e38;
    assert.ok(Number.isFinite(run(b, { aggregation: 'dapo', withRef: true, beta: 0.1 }).loss));
  });

  if (!ON_GPU) {
    it('returns TypedArrays for TypedArray inputs and Tensors for Tensor inputs', () => {
      const base = {
        oldLogprobs: new Float32Array([-1, -1, -2, -2]), advantages: new Float32Array([1, -1]),
        mask: new Uint8Array([1, 1, 1, 0]), groupIds: new Int32Array([0, 0]), aggregation: 'grpo' as const,
      };
      const plain = grpoLoss({ ...base, logprobs: new Float32Array([-1.1, -0.9, -2, -2]) });
      assert.ok(plain.gradLogprobs instanceof Float32Array && plain.seqLoss instanceof Float32Array);
      assert.equal(plain.gradLogprobs.length, 4);
      const wrapped = grpoLoss({ ...base, logprobs: Tensor.from(new Float32Array([-1.1, -0.9, -2, -2]), [2, 2]) });
      assert.ok(wrapped.gradLogprobs instanceof Tensor);
      assert.deepEqual(wrapped.gradLogprobs.shape, [2, 2]);
      const seq = values(plain.seqLoss);
      assertClose(seq[0] + seq[1], plain.loss, { atol: 1e-7, rtol: 1e-6 }, 'seqLoss sums to the loss');
    });

    it('rejects bad shapes, dtypes and options with errors that name the argument', () => {
      const B = 2, T = 3;
      const good = () => ({
        logprobs: new Float32Array(B * T).fill(-1), oldLogprobs: new Float32Array(B * T).fill(-1),
        advantages: new Float32Array([1, -1]), mask: new Uint8Array(B * T).fill(1), groupIds: new Int32Array([0, 0]),
        aggregation: 'dapo' as Aggregation,
      });
      const bad = (patch: Record<string, unknown>, pattern: RegExp, kind: ErrorConstructor = TypeError) =>
        assert.throws(() => grpoLoss({ ...good(), ...patch } as GrpoLossInput), (e: Error) => e instanceof kind && pattern.test(e.message), pattern.source);
      assert.doesNotThrow(() => grpoLoss(good()));
      bad({ aggregation: 'token_mean' }, /^aggregation: expected one of/);
      bad({ aggregation: undefined }, /^aggregation: required/);
      bad({ epsLow: -0.1 }, /^epsLow: expected >= 0/, RangeError);
      bad({ epsHigh: NaN }, /^epsHigh: expected a finite number/);
      bad({ dualClip: 1 }, /^dualClip: expected > 1/, RangeError);
      bad({ beta: -1 }, /^beta: expected >= 0/, RangeError);
      bad({ beta: 0.1 }, /^refLogprobs: required when beta > 0/);
      bad({ lambda: Infinity }, /^lambda: expected a finite number/);
      bad({ r: -1 }, /^r: expected >= 0/, RangeError);
      bad({ maxLength: 0 }, /^maxLength: expected >= 1/, RangeError);
      bad({ maxLength: 2.5 }, /^maxLength: expected an integer/, RangeError);
      bad({ normalizer: 0 }, /^normalizer: expected > 0/, RangeError);
      bad({ aggregation: 'lambda', weights: new Float32Array([1, 1]) }, /^dWeightsDLambda: required with weights/);
      bad({ dWeightsDLambda: new Float32Array([0, 0]), weights: new Float32Array([1, 1]) }, /^dWeightsDLambda: only used with aggregation 'lambda'/);
      bad({ aggregation: 'lambda', dWeightsDLambda: new Float32Array([0, 0]) }, /^dWeightsDLambda: pass it together with weights/);
      bad({ weights: new Float32Array([1, NaN]) }, /^weights: element 1 is NaN/, RangeError);
      bad({ weights: new Float32Array([1]) }, /^weights: length 1 does not fit shape \[2\]/, RangeError);
      bad({ oldLogprobs: new Float32Array(B * T + 1) }, /^oldLogprobs: length 7 does not fit shape \[2, 3\]/, RangeError);
      bad({ logprobs: new Float32Array(5) }, /^logprobs: length 5 does not fit shape \[2, \?\]/, RangeError);
      bad({ refLogprobs: new Float32Array(4), beta: 0.1 }, /^refLogprobs: length 4 does not fit/, RangeError);
      bad({ mask: new Int32Array(B * T) }, /^mask: expected dtype u8 or f32, got i32/);
      bad({ logprobs: Tensor.from(new Float32Array(B * T), [3, 2]) }, /^logprobs: expected shape \[2, \?\], got \[3, 2\]/, RangeError);
      bad({ groupIds: new Float32Array([0, 0]) }, /^groupIds: expected dtype i32, got f32/);
      bad({ groupIds: new Int32Array([0, -2]) }, /^groupIds: group id -2/, RangeError);
      bad({ groupIds: new Int32Array([0, 3]), groups: 2 }, /^groupIds: group id 3 at index 1/, RangeError);
      bad({ advantages: [1, 2] }, /^advantages: expected a Tensor or a TypedArray/);
      bad({ advantages: new Float32Array([1, Infinity]) }, /^advantages: element 1 is Infinity/, RangeError);
      assert.throws(() => grpoLoss(undefined as never), /^TypeError: input: expected an object/);
    });

    it('keeps the raw addon safe from bad arguments', async () => {
      const { addon } = await import('../../src/native.js');
      const t = (a: Float32Array | Int32Array | Uint8Array, dtype: string, shape: number[]) => ({ dtype, shape, device: 'cpu', data: a });
      const lp = t(new Float32Array(6), 'f32', [2, 3]);
      const adv = t(new Float32Array(2), 'f32', [2]);
      const mask = t(new Uint8Array(6), 'u8', [2, 3]);
      const ids = t(new Int32Array(2), 'i32', [2]);
      assert.doesNotThrow(() => addon().grpoLoss(lp, lp, null, adv, mask, ids, { aggregation: 'dapo' }));
      assert.throws(() => addon().grpoLoss(lp, lp, null, adv, mask, ids, {}), /aggregation: required/);
      assert.throws(() => addon().grpoLoss(lp, t(new Float32Array(3), 'f32', [1, 3]), null, adv, mask, ids, { aggregation: 'dapo' }), /oldLogprobs: expected shape/);
      assert.throws(() => addon().grpoLoss(lp, lp, null, adv, mask, t(new Int32Array([0, 7]), 'i32', [2]), { aggregation: 'dapo', groups: 2 }), RangeError);
      assert.throws(() => addon().grpoLoss(lp, lp, null, adv, mask, ids, { aggregation: 'lambda', weights: adv }), /dWeightsDLambda: required/);
      assert.throws(() => addon().grpoLoss(lp, lp, null, adv, mask, ids, { aggregation: 'dapo', beta: 1 }), /refLogprobs: required/);
      assert.throws(() => addon().grpoLoss(lp, lp, null, adv, mask, ids, { aggregation: 'dapo', weights: lp }), /weights: expected shape/);
    });
  }
});

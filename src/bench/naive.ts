// The in-process baseline: what a careful TypeScript programmer would write without
// thinking about speed. Straight from the math (docs/lambda-grpo-math.md),
// single-threaded, Math.exp, a materialised row of logits where that is the obvious
// thing to do. The benchmark reports the kernels' speed-up over these, and compares
// their outputs as a sanity check that both computed the same thing.

// bf16 is the top half of an f32: widen through a shared word.
const word = new Uint32Array(1);
const wordAsFloat = new Float32Array(word.buffer);
function bf16(bits: number): number {
  word[0] = bits << 16;
  return wordAsFloat[0];
}

/** Row `n` of [rows, vocab] logits as f32, divided by the temperature. */
function loadRow(logits: Float32Array | Uint16Array, dtype: 'f32' | 'bf16', n: number, vocab: number, temperature: number, row: Float32Array): void {
  const base = n * vocab;
  if (dtype === 'f32') for (let v = 0; v < vocab; v++) row[v] = (logits as Float32Array)[base + v] / temperature;
  else for (let v = 0; v < vocab; v++) row[v] = bf16(logits[base + v]) / temperature;
}

export interface NaiveLogprobs {
  logprobs: Float64Array;
  entropy?: Float64Array;
  lse: Float64Array;
}

/** Two-pass log-softmax at the target for the first `rows` rows: max, then Σ exp. */
export function naiveTokenLogprobs(
  logits: Float32Array | Uint16Array, dtype: 'f32' | 'bf16', rows: number, vocab: number, targets: Int32Array,
  temperature = 1, entropy = false,
): NaiveLogprobs {
  const out: NaiveLogprobs = { logprobs: new Float64Array(rows), lse: new Float64Array(rows) };
  if (entropy) out.entropy = new Float64Array(rows);
  const row = new Float32Array(vocab);
  for (let n = 0; n < rows; n++) {
    loadRow(logits, dtype, n, vocab, temperature, row);
    const stats = softmaxStats(row, entropy);
    out.lse[n] = stats.lse;
    out.logprobs[n] = row[targets[n]] - stats.lse;
    if (out.entropy) out.entropy[n] = stats.lse - stats.meanX;
  }
  return out;
}

function softmaxStats(row: Float32Array, withMean: boolean): { lse: number; meanX: number } {
  let max = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v] > max) max = row[v];
  let sum = 0, sumEx = 0;
  for (let v = 0; v < row.length; v++) {
    const e = Math.exp(row[v] - max);
    sum += e;
    if (withMean) sumEx += e * row[v];
  }
  return { lse: max + Math.log(sum), meanX: withMean ? sumEx / sum : 0 };
}

/**
 * ∂L/∂x for the first `rows` rows, from the spec's formula:
 * g (1[v=y] − p_v) − e p_v (x_v − Σ p x), divided by τ. Returns f32 [rows, vocab].
 */
export function naiveTokenLogprobsBackward(
  logits: Float32Array | Uint16Array, dtype: 'f32' | 'bf16', rows: number, vocab: number, targets: Int32Array,
  gradLogprobs: Float32Array, gradEntropy: Float32Array | undefined, temperature = 1,
): Float32Array {
  const grad = new Float32Array(rows * vocab);
  const row = new Float32Array(vocab);
  for (let n = 0; n < rows; n++) {
    loadRow(logits, dtype, n, vocab, temperature, row);
    const { lse, meanX } = softmaxStats(row, true);
    const g = gradLogprobs[n], e = gradEntropy ? gradEntropy[n] : 0;
    for (let v = 0; v < vocab; v++) {
      const p = Math.exp(row[v] - lse);
      const d = g * ((v === targets[n] ? 1 : 0) - p) - e * p * (row[v] - meanX);
      grad[n * vocab + v] = d / temperature;
    }
  }
  return grad;
}

/** Logits of row n: W h_n / τ, materialised (the obvious way). */
function linearRow(hidden: Float32Array, weight: Float32Array, n: number, dim: number, vocab: number, temperature: number, row: Float32Array): void {
  const h = n * dim;
  for (let v = 0; v < vocab; v++) {
    const w = v * dim;
    let acc = 0;
    for (let k = 0; k < dim; k++) acc += weight[w + k] * hidden[h + k];
    row[v] = acc / temperature;
  }
}

export function naiveLinearTokenLogprobs(
  hidden: Float32Array, weight: Float32Array, rows: number, dim: number, vocab: number, targets: Int32Array,
  temperature = 1, entropy = false,
): NaiveLogprobs {
  const out: NaiveLogprobs = { logprobs: new Float64Array(rows), lse: new Float64Array(rows) };
  if (entropy) out.entropy = new Float64Array(rows);
  const row = new Float32Array(vocab);
  for (let n = 0; n < rows; n++) {
    linearRow(hidden, weight, n, dim, vocab, temperature, row);
    const stats = softmaxStats(row, entropy);
    out.lse[n] = stats.lse;
    out.logprobs[n] = row[targets[n]] - stats.lse;
    if (out.entropy) out.entropy[n] = stats.lse - stats.meanX;
  }
  return out;
}

/** Backward of the fused-linear form for the first `rows` rows: ∂L/∂h and ∂L/∂W. */
export function naiveLinearTokenLogprobsBackward(
  hidden: Float32Array, weight: Float32Array, rows: number, dim: number, vocab: number, targets: Int32Array,
  gradLogprobs: Float32Array, temperature = 1,
): { gradHidden: Float32Array; gradWeight: Float32Array } {
  const gradHidden = new Float32Array(rows * dim);
  const gradWeight = new Float32Array(vocab * dim);
  const row = new Float32Array(vocab);
  for (let n = 0; n < rows; n++) {
    linearRow(hidden, weight, n, dim, vocab, temperature, row);
    const { lse } = softmaxStats(row, false);
    for (let v = 0; v < vocab; v++) {
      const p = Math.exp(row[v] - lse);
      const dx = (gradLogprobs[n] * ((v === targets[n] ? 1 : 0) - p)) / temperature;
      for (let k = 0; k < dim; k++) {
        gradHidden[n * dim + k] += dx * weight[v * dim + k];
        gradWeight[v * dim + k] += dx * hidden[n * dim + k];
      }
    }
  }
  return { gradHidden, gradWeight };
}

function groupsOf(groupIds: Int32Array): number[][] {
  const members: number[][] = [];
  for (let i = 0; i < groupIds.length; i++) (members[groupIds[i]] ??= []).push(i);
  return members;
}

/** GRPO advantages, mode 'std' with the unbiased std (spec §2). */
export function naiveGroupAdvantages(rewards: Float32Array, groupIds: Int32Array, eps = 1e-6): Float64Array {
  const adv = new Float64Array(rewards.length);
  for (const rows of groupsOf(groupIds)) {
    if (!rows || rows.length < 2) continue;
    const mean = rows.reduce((s, i) => s + rewards[i], 0) / rows.length;
    const std = Math.sqrt(rows.reduce((s, i) => s + (rewards[i] - mean) ** 2, 0) / (rows.length - 1));
    if (rows.every((i) => rewards[i] === rewards[rows[0]])) continue;
    for (const i of rows) adv[i] = (rewards[i] - mean) / (std + eps);
  }
  return adv;
}

/** λ-GRPO weights f_i and ∂f_i/∂λ from lengths (spec §4). */
export function naiveLambdaWeights(lengths: Float32Array, groupIds: Int32Array, lambda: number, r = 1 / 9): { weights: Float64Array; dWeightsDLambda: Float64Array } {
  const weights = new Float64Array(lengths.length), dWeightsDLambda = new Float64Array(lengths.length);
  for (const rows of groupsOf(groupIds)) {
    if (!rows) continue;
    const G = rows.length;
    const mean = rows.reduce((s, i) => s + lengths[i], 0) / G;
    const sigma = Math.sqrt(rows.reduce((s, i) => s + (lengths[i] - mean) ** 2, 0) / G);
    const h = rows.map((i) => Math.max(1 + (r * (lengths[i] - mean)) / Math.max(sigma, 1e-8), 1e-6));
    const q = h.map((x) => x ** lambda);
    const qMax = Math.max(...q);
    const e = q.map((x) => Math.exp(x - qMax));
    const total = e.reduce((a, b) => a + b, 0);
    const s = e.map((x) => x / total);
    const meanQLnH = s.reduce((acc, sj, j) => acc + sj * q[j] * Math.log(h[j]), 0);
    rows.forEach((i, j) => {
      weights[i] = G * s[j];
      dWeightsDLambda[i] = G * s[j] * (q[j] * Math.log(h[j]) - meanQLnH);
    });
  }
  return { weights, dWeightsDLambda };
}

export interface NaiveLossInputs {
  logprobs: Float32Array;
  oldLogprobs: Float32Array;
  refLogprobs?: Float32Array;
  advantages: Float32Array;
  mask: Uint8Array;
  groupIds: Int32Array;
  B: number;
  T: number;
  lambda: number;
  beta: number;
  epsLow?: number;
  epsHigh?: number;
}

/** The λ-aggregated clipped surrogate with the k3 KL (spec §3-4): loss, ∂L/∂logp, ∂L/∂λ. */
export function naiveGrpoLoss(x: NaiveLossInputs): { loss: number; gradLogprobs: Float32Array; gradLambda: number } {
  const { B, T, beta } = x;
  const epsLow = x.epsLow ?? 0.2, epsHigh = x.epsHigh ?? 0.2;
  const lengths = new Float32Array(B);
  for (let i = 0; i < B; i++) for (let t = 0; t < T; t++) lengths[i] += x.mask[i * T + t];
  const { weights, dWeightsDLambda } = naiveLambdaWeights(lengths, x.groupIds, x.lambda);
  const N = Math.max(lengths.reduce((a, b) => a + b, 0), 1);
  const grad = new Float32Array(B * T);
  let loss = 0, gradLambda = 0;
  for (let i = 0; i < B; i++) {
    const A = x.advantages[i];
    let S = 0;
    for (let t = 0; t < T; t++) {
      const k = i * T + t;
      if (!x.mask[k]) continue;
      const ratio = Math.exp(x.logprobs[k] - x.oldLogprobs[k]);
      const unclipped = ratio * A;
      const clipped = Math.min(Math.max(ratio, 1 - epsLow), 1 + epsHigh) * A;
      let tokenLoss = -Math.min(unclipped, clipped);
      let d = unclipped <= clipped ? -A * ratio : 0;
      if (beta > 0 && x.refLogprobs) {
        const diff = Math.min(Math.max(x.refLogprobs[k] - x.logprobs[k], -20), 20);
        tokenLoss += beta * (Math.exp(diff) - diff - 1);
        d += beta * (1 - Math.exp(diff));
      }
      S += tokenLoss;
      grad[k] = (weights[i] / N) * d;
    }
    loss += (weights[i] * S) / N;
    gradLambda += (S * dWeightsDLambda[i]) / N;
  }
  return { loss, gradLogprobs: grad, gradLambda };
}

/** The first `rows` rows of C = op(A)·op(B), row-major, three nested loops. */
export function naiveGemm(
  a: Float32Array, b: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, rows = m,
): Float32Array {
  const c = new Float32Array(rows * n);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = sum;
    }
  return c;
}

/**
 * Causal grouped-query attention of batch row 0 (q [B, T, Hq, hd], k and v [B, T, Hkv, hd],
 * every position valid): out [T, Hq, hd] and lse [Hq, T] of that row, a materialised row of
 * scores per query.
 */
export function naiveAttention(
  q: Float32Array, k: Float32Array, v: Float32Array, T: number, Hq: number, Hkv: number, hd: number, scale: number,
): { out: Float64Array; lse: Float64Array } {
  const G = Hq / Hkv;
  const out = new Float64Array(T * Hq * hd), lse = new Float64Array(Hq * T), s = new Float64Array(T);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / G);
      let max = -Infinity;
      for (let j = 0; j <= t; j++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[(t * Hq + h) * hd + d] * k[(j * Hkv + kvh) * hd + d];
        s[j] = dot * scale;
        if (s[j] > max) max = s[j];
      }
      let z = 0;
      for (let j = 0; j <= t; j++) z += (s[j] = Math.exp(s[j] - max));
      for (let j = 0; j <= t; j++)
        for (let d = 0; d < hd; d++) out[(t * Hq + h) * hd + d] += (s[j] / z) * v[(j * Hkv + kvh) * hd + d];
      lse[h * T + t] = max + Math.log(z);
    }
  return { out, lse };
}

/** Gradients of naiveAttention's row-0 output against dout (batch row 0: [T, Hq, hd]). */
export function naiveAttentionBackward(
  q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array, T: number, Hq: number, Hkv: number, hd: number, scale: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const G = Hq / Hkv;
  const { out, lse } = naiveAttention(q, k, v, T, Hq, Hkv, hd, scale);
  const dq = new Float64Array(T * Hq * hd), dk = new Float64Array(T * Hkv * hd), dv = new Float64Array(T * Hkv * hd);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / G), row = (t * Hq + h) * hd;
      let dOo = 0;
      for (let d = 0; d < hd; d++) dOo += dout[row + d] * out[row + d];
      for (let j = 0; j <= t; j++) {
        const kv = (j * Hkv + kvh) * hd;
        let s = 0, dp = 0;
        for (let d = 0; d < hd; d++) {
          s += q[row + d] * k[kv + d];
          dp += dout[row + d] * v[kv + d];
        }
        const p = Math.exp(s * scale - lse[h * T + t]), ds = p * (dp - dOo);
        for (let d = 0; d < hd; d++) {
          dv[kv + d] += p * dout[row + d];
          dq[row + d] += scale * ds * k[kv + d];
          dk[kv + d] += scale * ds * q[row + d];
        }
      }
    }
  return { dq, dk, dv };
}

// Float64 reference of the whole policy model, written from the architecture description
// (Qwen2 / Llama), one sequence at a time so that padding cannot matter:
//
//   x_t   = E[id_t]
//   per layer:
//     h   = rmsnorm(x_t) ⊙ w_in                      rmsnorm(x) = x / sqrt(mean(x²) + eps)
//     q_t = Wq h + bq,  k_t = Wk h + bk,  v_t = Wv h + bv          (biases when present)
//     q_t, k_t ← RoPE(position t), per head, rotate_half convention
//     a_t = for each query head i (kv head j = i / (Hq/Hkv)):
//             Σ_{s ≤ t} softmax_s(q_t,i · k_s,j / sqrt(hd)) v_s,j
//     x_t ← x_t + Wo a_t + bo
//     g   = rmsnorm(x_t) ⊙ w_post
//     x_t ← x_t + Wd (silu(Wg g) ⊙ (Wu g))          silu(z) = z / (1 + e^−z)
//   hidden_t = rmsnorm(x_t) ⊙ w_final
//   logits_t = W_head hidden_t                       (W_head = E when tied)
import type { ModelConfig } from '../../src/engine/config.js';

export type Params = Map<string, ArrayLike<number>>;

function rmsnorm(x: Float64Array, w: ArrayLike<number>, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * w[i]);
}

/** y = W x (+ b) with W [out, in] row-major. */
function linear(W: ArrayLike<number>, x: Float64Array, out: number, b?: ArrayLike<number>): Float64Array {
  const n = x.length, y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < n; i++) s += W[o * n + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** Rotates every head of x (heads × hd, in place) to position pos. */
function rope(x: Float64Array, heads: number, hd: number, pos: number, theta: number): void {
  const half = hd / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * hd;
    for (let j = 0; j < half; j++) {
      const angle = pos * Math.pow(theta, (-2 * j) / hd);
      const c = Math.cos(angle), s = Math.sin(angle);
      const x1 = x[base + j], x2 = x[base + half + j];
      x[base + j] = x1 * c - x2 * s;
      x[base + half + j] = x2 * c + x1 * s;
    }
  }
}

const silu = (z: number) => z / (1 + Math.exp(-z));

/** Final normed hidden states of one sequence: one Float64Array [D] per token. */
export function referenceHidden(config: ModelConfig, params: Params, ids: readonly number[]): Float64Array[] {
  const D = config.hiddenSize, I = config.intermediateSize, hd = config.headDim;
  const Hq = config.numAttentionHeads, Hkv = config.numKeyValueHeads, group = Hq / Hkv;
  const eps = config.rmsNormEps, theta = config.ropeTheta;
  const p = (name: string) => {
    const t = params.get(name);
    if (!t) throw new Error(`reference: missing parameter ${name}`);
    return t;
  };
  const E = p('model.embed_tokens.weight');
  let x = ids.map((id) => Float64Array.from({ length: D }, (_, i) => E[id * D + i]));

  for (let l = 0; l < config.numHiddenLayers; l++) {
    const pre = `model.layers.${l}`;
    const bias = (proj: string) => params.get(`${pre}.self_attn.${proj}_proj.bias`);
    const qs: Float64Array[] = [], ks: Float64Array[] = [], vs: Float64Array[] = [];
    x.forEach((xt, t) => {
      const h = rmsnorm(xt, p(`${pre}.input_layernorm.weight`), eps);
      const q = linear(p(`${pre}.self_attn.q_proj.weight`), h, Hq * hd, bias('q'));
      const k = linear(p(`${pre}.self_attn.k_proj.weight`), h, Hkv * hd, bias('k'));
      const v = linear(p(`${pre}.self_attn.v_proj.weight`), h, Hkv * hd, bias('v'));
      rope(q, Hq, hd, t, theta);
      rope(k, Hkv, hd, t, theta);
      qs.push(q);
      ks.push(k);
      vs.push(v);
    });
    x = x.map((xt, t) => {
      const a = new Float64Array(Hq * hd);
      for (let i = 0; i < Hq; i++) {
        const j = Math.floor(i / group);
        const scores = Array.from({ length: t + 1 }, (_, s) => {
          let dot = 0;
          for (let e = 0; e < hd; e++) dot += qs[t][i * hd + e] * ks[s][j * hd + e];
          return dot / Math.sqrt(hd);
        });
        const max = Math.max(...scores);
        const w = scores.map((z) => Math.exp(z - max));
        const total = w.reduce((u, v) => u + v, 0);
        for (let s = 0; s <= t; s++)
          for (let e = 0; e < hd; e++) a[i * hd + e] += (w[s] / total) * vs[s][j * hd + e];
      }
      const o = linear(p(`${pre}.self_attn.o_proj.weight`), a, D, bias('o'));
      const mid = xt.map((v, i) => v + o[i]);
      const g = rmsnorm(mid, p(`${pre}.post_attention_layernorm.weight`), eps);
      const gate = linear(p(`${pre}.mlp.gate_proj.weight`), g, I);
      const up = linear(p(`${pre}.mlp.up_proj.weight`), g, I);
      const m = gate.map((z, i) => silu(z) * up[i]);
      const down = linear(p(`${pre}.mlp.down_proj.weight`), m, D);
      return mid.map((v, i) => v + down[i]);
    });
  }
  return x.map((xt) => rmsnorm(xt, p('model.norm.weight'), eps));
}

export function lmHead(config: ModelConfig, params: Params): ArrayLike<number> {
  return params.get(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight')!;
}

/** log softmax(W h / τ) as a Float64Array [V]. */
export function referenceLogSoftmax(config: ModelConfig, params: Params, hidden: Float64Array, temperature = 1): Float64Array {
  const logits = linear(lmHead(config, params), hidden, config.vocabSize).map((z) => z / temperature);
  const max = Math.max(...logits);
  let total = 0;
  for (const z of logits) total += Math.exp(z - max);
  const lse = max + Math.log(total);
  return logits.map((z) => z - lse);
}

export interface LossRow {
  ids: readonly number[];
  /** target token per position of ids */
  targets: readonly number[];
  /** weight per position of ids */
  coeffs: readonly number[];
}

/** Σ_rows Σ_t c_t · log softmax(W_head hidden_t)[target_t]: the loss the gradient tests use. */
export function referenceLoss(config: ModelConfig, params: Params, rows: readonly LossRow[]): number {
  let loss = 0;
  for (const row of rows) {
    const hidden = referenceHidden(config, params, row.ids);
    hidden.forEach((h, t) => {
      if (row.coeffs[t] !== 0) loss += row.coeffs[t] * referenceLogSoftmax(config, params, h)[row.targets[t]];
    });
  }
  return loss;
}

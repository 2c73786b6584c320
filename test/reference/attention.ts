// Float64 reference for attentionForward / attentionBackward, written to be read: one
// query row at a time, probabilities held explicitly.
//   s_j = scale · q_t·k_j for j ≤ t,  p = softmax(s),  out_t = Σ_j p_j v_j
//   dp_j = dout_t·v_j,  ds_j = p_j (dp_j − Σ_l p_l dp_l)
//   dq_t = scale Σ_j ds_j k_j,  dk_j += scale ds_j q_t,  dv_j += p_j dout_t
// Rows t ≥ lengths[b] are padding: out = 0, lse = 0, no gradient either way.
export interface AttentionDims {
  B: number;
  T: number;
  Hq: number;
  Hkv: number;
  hd: number;
}

const qIndex = (d: AttentionDims, b: number, t: number, h: number) => ((b * d.T + t) * d.Hq + h) * d.hd;
const kIndex = (d: AttentionDims, b: number, t: number, h: number) => ((b * d.T + t) * d.Hkv + h) * d.hd;

function probabilities(q: ArrayLike<number>, k: ArrayLike<number>, d: AttentionDims, b: number, h: number, t: number, scale: number) {
  const kvh = Math.floor(h / (d.Hq / d.Hkv));
  const s: number[] = [];
  for (let j = 0; j <= t; j++) {
    let dot = 0;
    for (let i = 0; i < d.hd; i++) dot += q[qIndex(d, b, t, h) + i] * k[kIndex(d, b, j, kvh) + i];
    s.push(scale * dot);
  }
  const m = Math.max(...s);
  const sum = s.reduce((a, x) => a + Math.exp(x - m), 0);
  return { kvh, p: s.map((x) => Math.exp(x - m) / sum), lse: m + Math.log(sum) };
}

export function attentionReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  lengths: ArrayLike<number>,
  d: AttentionDims,
  scale: number,
) {
  const out = new Float64Array(d.B * d.T * d.Hq * d.hd), lse = new Float64Array(d.B * d.Hq * d.T);
  for (let b = 0; b < d.B; b++)
    for (let h = 0; h < d.Hq; h++)
      for (let t = 0; t < lengths[b]; t++) {
        const { kvh, p, lse: l } = probabilities(q, k, d, b, h, t, scale);
        lse[(b * d.Hq + h) * d.T + t] = l;
        for (let j = 0; j <= t; j++)
          for (let i = 0; i < d.hd; i++) out[qIndex(d, b, t, h) + i] += p[j] * v[kIndex(d, b, j, kvh) + i];
      }
  return { out, lse };
}

export function attentionBackwardReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  lengths: ArrayLike<number>,
  dout: ArrayLike<number>,
  d: AttentionDims,
  scale: number,
) {
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  for (let b = 0; b < d.B; b++)
    for (let h = 0; h < d.Hq; h++)
      for (let t = 0; t < lengths[b]; t++) {
        const { kvh, p } = probabilities(q, k, d, b, h, t, scale);
        const qi = qIndex(d, b, t, h);
        const dp = p.map((_, j) => {
          let dot = 0;
          for (let i = 0; i < d.hd; i++) dot += dout[qi + i] * v[kIndex(d, b, j, kvh) + i];
          return dot;
        });
        const expected = p.reduce((a, pj, j) => a + pj * dp[j], 0);
        for (let j = 0; j <= t; j++) {
          const ds = p[j] * (dp[j] - expected), ki = kIndex(d, b, j, kvh);
          for (let i = 0; i < d.hd; i++) {
            dq[qi + i] += scale * ds * k[ki + i];
            dk[ki + i] += scale * ds * q[qi + i];
            dv[ki + i] += p[j] * dout[qi + i];
          }
        }
      }
  return { dq, dk, dv };
}

// Float64 reference for lambdaWeights, straight from spec §4.
export interface LambdaWeightsReference {
  weights: Float64Array;
  dWeightsDLambda: Float64Array;
}

export function lambdaWeightsReference(
  lengths: ArrayLike<number>,
  groupIds: ArrayLike<number>,
  groups: number,
  lambda: number,
  r = 1 / 9,
): LambdaWeightsReference {
  const members: number[][] = Array.from({ length: groups }, () => []);
  for (let i = 0; i < lengths.length; i++) members[groupIds[i]].push(i);
  const weights = new Float64Array(lengths.length);
  const dWeightsDLambda = new Float64Array(lengths.length);
  for (const rows of members) {
    if (rows.length === 0) continue;
    const G = rows.length;
    const mu = rows.reduce((a, i) => a + lengths[i], 0) / G;
    const sigma = Math.sqrt(rows.reduce((a, i) => a + (lengths[i] - mu) ** 2, 0) / G);  // population
    const h = rows.map((i) => Math.max(1 + (r * (lengths[i] - mu)) / Math.max(sigma, 1e-8), 1e-6));
    const q = h.map((x) => x ** lambda);
    const top = Math.max(...q);
    const e = q.map((x) => Math.exp(x - top));
    const total = e.reduce((a, b) => a + b, 0);
    const s = e.map((x) => x / total);
    // ∂f_i/∂λ = G s_i (q_i ln h_i − Σ_j s_j q_j ln h_j), since ∂q_i/∂λ = q_i ln h_i.
    const mean = s.reduce((a, sj, j) => a + sj * q[j] * Math.log(h[j]), 0);
    rows.forEach((i, k) => {
      weights[i] = G * s[k];
      dWeightsDLambda[i] = G * s[k] * (q[k] * Math.log(h[k]) - mean);
    });
  }
  return { weights, dWeightsDLambda };
}

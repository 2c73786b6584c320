// Float64 reference for groupAdvantages, straight from spec §2.
export interface AdvantagesReference {
  advantages: Float64Array;
  mean: Float64Array;
  std: Float64Array;
  degenerate: boolean[];
}

export function groupAdvantagesReference(
  rewards: ArrayLike<number>,
  groupIds: ArrayLike<number>,
  groups: number,
  mode: 'std' | 'mean' | 'batch' | 'rloo',
  eps = 1e-6,
  unbiased = true,
): AdvantagesReference {
  const members: number[][] = Array.from({ length: groups }, () => []);
  for (let i = 0; i < rewards.length; i++) members[groupIds[i]].push(rewards[i]);
  const mean = new Float64Array(groups), std = new Float64Array(groups);
  const degenerate: boolean[] = [];
  for (let g = 0; g < groups; g++) {
    const r = members[g];
    const m = r.length ? r.reduce((a, b) => a + b, 0) / r.length : 0;
    const n = unbiased ? r.length - 1 : r.length;
    mean[g] = m;
    std[g] = n > 0 ? Math.sqrt(r.reduce((a, b) => a + (b - m) ** 2, 0) / n) : 0;
    degenerate.push(r.length < 2 || r.every((x) => x === r[0]));
  }
  const all = Array.from(rewards);
  const batchMean = all.reduce((a, b) => a + b, 0) / Math.max(all.length, 1);
  const batchN = unbiased ? all.length - 1 : all.length;
  const batchStd = batchN > 0 ? Math.sqrt(all.reduce((a, b) => a + (b - batchMean) ** 2, 0) / batchN) : 0;
  const advantages = new Float64Array(rewards.length);
  for (let i = 0; i < rewards.length; i++) {
    const g = groupIds[i];
    if (degenerate[g]) continue;
    const r = rewards[i];
    if (mode === 'std') advantages[i] = (r - mean[g]) / (std[g] + eps);
    else if (mode === 'mean') advantages[i] = r - mean[g];
    else if (mode === 'batch') advantages[i] = (r - mean[g]) / (batchStd + eps);
    else {
      const others = members[g].length - 1;
      advantages[i] = r - (mean[g] * members[g].length - r) / others;
    }
  }
  return { advantages, mean, std, degenerate };
}

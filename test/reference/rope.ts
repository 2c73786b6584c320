// Float64 reference for ropeForward / ropeBackward (Hugging Face rotate_half):
//   half = hd/2, inv_freq_j = θ^(−2j/hd) rounded to f32 (HF computes it in f32),
//   angle = pos · inv_freq_j, and per head (x1, x2) = (x[:half], x[half:]) →
//   (x1·cos − x2·sin, x2·cos + x1·sin). The backward rotates by −angle (sign = −1).
export function ropeInvFreq(theta: number, hd: number): number[] {
  return Array.from({ length: hd / 2 }, (_, j) => Math.fround(1 / Math.pow(theta, (2 * j) / hd)));
}

/** x [tokens, heads, hd] rotated by positions [tokens]; returns a new array. */
export function ropeReference(
  x: ArrayLike<number>,
  tokens: number,
  heads: number,
  hd: number,
  positions: ArrayLike<number>,
  theta: number,
  sign: 1 | -1 = 1,
): Float64Array {
  const half = hd / 2, freq = ropeInvFreq(theta, hd);
  const y = new Float64Array(tokens * heads * hd);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * hd;
      for (let j = 0; j < half; j++) {
        const angle = sign * positions[t] * freq[j];
        const c = Math.cos(angle), s = Math.sin(angle);
        const x1 = x[base + j], x2 = x[base + half + j];
        y[base + j] = x1 * c - x2 * s;
        y[base + half + j] = x2 * c + x1 * s;
      }
    }
  }
  return y;
}

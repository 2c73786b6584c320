// Float64 reference for rmsNormForward / rmsNormBackward, written to be read.
//   y_i = w_i · x_i · r,  r = 1 / sqrt(mean_k x_k² + eps)
//   dx_k = r · (g_k − x̂_k · mean_i(g_i x̂_i)),  g = dy ⊙ w,  x̂ = x · r
//   dw_i = Σ_rows dy_i · x̂_i
export function rmsNormReference(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, dim: number, eps: number) {
  const y = new Float64Array(rows * dim), rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    rstd[r] = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = w[i] * x[r * dim + i] * rstd[r];
  }
  return { y, rstd };
}

export function rmsNormBackwardReference(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
) {
  const { rstd } = rmsNormReference(x, w, rows, dim, eps);
  const dx = new Float64Array(rows * dim), dw = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const R = rstd[r];
    let mean = 0;
    for (let i = 0; i < dim; i++) mean += dy[r * dim + i] * w[i] * x[r * dim + i] * R;
    mean /= dim;
    for (let i = 0; i < dim; i++) {
      const xhat = x[r * dim + i] * R;
      dx[r * dim + i] = R * (dy[r * dim + i] * w[i] - xhat * mean);
      dw[i] += dy[r * dim + i] * xhat;
    }
  }
  return { dx, dw };
}

// Float64 reference for gemm: the textbook triple loop over row-major storage with
// leading dimensions, plus the magnitude Σ|a||b| each element's rounding error scales with.
export interface StoredMatrix {
  data: ArrayLike<number>;
  rows: number;
  cols: number;
  ld: number;
}

/** op(X)[i][j]: X itself, or its transpose. */
function at(x: StoredMatrix, trans: boolean, i: number, j: number): number {
  return trans ? x.data[j * x.ld + i] : x.data[i * x.ld + j];
}

export interface GemmReference {
  /** alpha·op(A)·op(B) + beta·C0, [m, n] dense */
  value: Float64Array;
  /** |alpha|·Σ_k |op(A)_ik|·|op(B)_kj| + |beta|·|C0_ij| */
  magnitude: Float64Array;
}

export function gemmReference(
  a: StoredMatrix, b: StoredMatrix, c0: StoredMatrix,
  transA: boolean, transB: boolean, alpha: number, beta: number,
): GemmReference {
  const m = transA ? a.cols : a.rows, k = transA ? a.rows : a.cols;
  const n = transB ? b.rows : b.cols;
  const value = new Float64Array(m * n), magnitude = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0, abs = 0;
      for (let p = 0; p < k; p++) {
        const prod = at(a, transA, i, p) * at(b, transB, p, j);
        sum += prod;
        abs += Math.abs(prod);
      }
      // beta = 0 means C is not read at all (it may hold NaN).
      const old = beta === 0 ? 0 : c0.data[i * c0.ld + j];
      value[i * n + j] = alpha * sum + beta * old;
      magnitude[i * n + j] = Math.abs(alpha) * abs + Math.abs(beta * old);
    }
  }
  return { value, magnitude };
}

// Float64 reference for embeddingForward / embeddingBackward: a gather and a scatter-add.
export function embeddingReference(table: ArrayLike<number>, dim: number, ids: ArrayLike<number>): Float64Array {
  const out = new Float64Array(ids.length * dim);
  for (let n = 0; n < ids.length; n++) for (let i = 0; i < dim; i++) out[n * dim + i] = table[ids[n] * dim + i];
  return out;
}

export function embeddingBackwardReference(ids: ArrayLike<number>, dout: ArrayLike<number>, vocab: number, dim: number): Float64Array {
  const dtable = new Float64Array(vocab * dim);
  for (let n = 0; n < ids.length; n++) for (let i = 0; i < dim; i++) dtable[ids[n] * dim + i] += dout[n * dim + i];
  return dtable;
}

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { addon } from '../../src/native.js';
import { embeddingBackward, embeddingForward } from '../../src/ops/embedding.js';
import { embeddingBackwardReference, embeddingReference } from '../reference/embedding.js';
import { ON_GPU, assertClose, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

/** Ids with heavy repetition (a hot id), both ends of the vocabulary, and random rest. */
function ids(r: Rng, n: number, vocab: number): Int32Array {
  const out = r.ints(n, 0, vocab);
  for (let i = 0; i < n; i += 3) out[i] = vocab - 1;
  for (let i = 1; i < n; i += 7) out[i] = 0;
  return out;
}

describe('embedding (engine leaf, CPU)', () => {
  it('forward gathers rows and backward scatter-adds them (float64 reference)', () => {
    const r = rng('embedding');
    const cases: [number, number, number[]][] = [[1, 1, [3]], [7, 13, [2, 5]], [50, 131, [4, 9]], [1000, 64, [1, 1]], [5, 3, [0]]];
    for (const [vocab, dim, shape] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const table = r.normals(vocab * dim), id = ids(r, n, vocab), dout = r.normals(n * dim);
      const out = embeddingForward(Tensor.from(table, [vocab, dim]), Tensor.from(id, [...shape]));
      assert.deepEqual(out.shape, [...shape, dim]);
      assertClose(values(out), embeddingReference(table, dim, id), { atol: 0, rtol: 0 }, 'rows are copied exactly');
      const dtable = embeddingBackward(Tensor.from(id, [...shape]), Tensor.from(dout, [...shape, dim]), { vocab });
      assert.deepEqual(dtable.shape, [vocab, dim]);
      assertClose(values(dtable), embeddingBackwardReference(id, dout, vocab, dim), { atol: 1e-5, rtol: 1e-5 }, 'dtable');
    }
  });

  it('the backward is the adjoint of the forward: <gather(W), G> = <W, scatter(G)> (float64 check of the reference)', () => {
    // A linear map's gradient is its adjoint; checking the identity on random W and G is
    // the finite-difference check made exact, and it would catch a wrong row or a lost add.
    const r = rng('embedding adjoint');
    const vocab = 9, dim = 5, n = 23;
    const W = Float64Array.from(r.normals(vocab * dim)), G = Float64Array.from(r.normals(n * dim)), id = ids(r, n, vocab);
    const lhs = embeddingReference(W, dim, id).reduce((a, x, i) => a + x * G[i], 0);
    const rhs = embeddingBackwardReference(id, G, vocab, dim).reduce((a, x, i) => a + x * W[i], 0);
    assertClose(lhs, rhs, { atol: 1e-12, rtol: 1e-12 }, 'adjoint identity');
  });

  it('accumulates into a given dtable (a tied LM head shares it)', () => {
    const r = rng('embedding accumulate');
    const vocab = 11, dim = 6, n = 30;
    const id = ids(r, n, vocab), dout = r.normals(n * dim), prior = r.normals(vocab * dim);
    const dtable = Tensor.from(prior.slice(), [vocab, dim]);
    const result = embeddingBackward(id, Tensor.from(dout, [n, dim]), { dtable });
    assert.equal(result, dtable);
    const ref = embeddingBackwardReference(id, dout, vocab, dim);
    assertClose(values(dtable), Float64Array.from(ref, (g, i) => g + prior[i]), { atol: 1e-5, rtol: 1e-5 }, 'dtable +=');
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('embedding determinism');
    const vocab = 40, dim = 131, n = 300;
    const id = ids(r, n, vocab), dout = Tensor.from(r.normals(n * dim), [n, dim]);
    const once = () => values(embeddingBackward(id, dout, { vocab }));
    assert.deepEqual(once(), once());
    const seed = r.int(1, 2 ** 31);
    const hashes = [1, 2, 3].map((threads) =>
      hashInChild(threads, `
        const { embeddingBackward, embeddingForward } = await import(${JSON.stringify(here('../../src/ops/embedding.js'))});
        const { Tensor } = await import(${JSON.stringify(here('../../src/index.js'))});
        const r = new Rng(${seed});
        const vocab = 40, dim = 131, n = 300;
        const ids = r.ints(n, 0, 4);  // few distinct ids: long chains of adds into the same rows
        const table = Tensor.from(r.normals(vocab * dim), [vocab, dim]);
        const dout = Tensor.from(r.normals(n * dim), [n, dim]);
        done([embeddingForward(table, ids).data, embeddingBackward(ids, dout, { vocab }).data]);`));
    assert.equal(hashes[1], hashes[0], '2 threads vs 1');
    assert.equal(hashes[2], hashes[0], '3 threads vs 1');
  });

  it('rejects bad input with errors naming the argument, before writing anything', () => {
    const table = Tensor.from(new Float32Array(12), [4, 3]);
    assert.throws(() => embeddingForward(table, Int32Array.from([0, 4])), /ids: token id 4 at index 1 is outside \[0, 4\)/);
    assert.throws(() => embeddingForward(table, Int32Array.from([-1])), /ids: token id -1 at index 0/);
    assert.throws(() => embeddingForward(table, new Float32Array(2) as never), /ids: expected/);
    assert.throws(() => embeddingForward(new Float32Array(12) as never, Int32Array.from([0])), /table: expected a Tensor/);
    const dout = Tensor.from(new Float32Array(6), [2, 3]);
    assert.throws(() => embeddingBackward(Int32Array.from([0, 1]), dout), /vocab: required/);
    assert.throws(() => embeddingBackward(Int32Array.from([0, 1, 2]), dout, { vocab: 4 }), /dout: expected shape \[3, 3\]/);
    assert.throws(() => embeddingBackward(Int32Array.from([0, 9]), dout, { vocab: 4 }), /ids: token id 9 at index 1/);
    const dtable = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => i), [4, 3]);
    assert.throws(() => embeddingBackward(Int32Array.from([1, 7]), dout, { dtable }), /ids: token id 7/);
    assert.deepEqual(Array.from(dtable.data as Float32Array), Array.from({ length: 12 }, (_, i) => i), 'dtable untouched');
    assert.throws(() => embeddingBackward(Int32Array.from([0, 1]), dout, { dtable: Tensor.from(new Float32Array(8), [4, 2]) }), /dtable: expected 3 columns/);
    // The raw addon re-checks ids itself (CUDA kernels cannot rely on the TypeScript pass).
    assert.throws(() => addon().embeddingForward(table, Tensor.from(Int32Array.from([5]))), /ids: token id 5 at index 0 is outside \[0, 4\)/);
    assert.throws(() => addon().embeddingBackward(Tensor.from(Int32Array.from([0, 5])), dout, {}, dtable), /ids: token id 5 at index 1/);
  });

  if (ON_GPU) {
    it('says clearly that CUDA tensors are not supported yet', () => {
      const t = Tensor.from(new Float32Array(12), [4, 3]).to('cuda:0');
      assert.throws(() => embeddingForward(t, Tensor.from(Int32Array.from([0])).to('cuda:0')), /not yet available on CUDA/);
    });
  }
});

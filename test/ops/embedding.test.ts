import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { addon } from '../../src/native.js';
import { embeddingBackward, embeddingForward } from '../../src/ops/embedding.js';
import { embeddingBackwardReference, embeddingReference } from '../reference/embedding.js';
import { ON_GPU, TEST_DEVICE, assertClose, onDevice, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

/** Ids with heavy repetition (a hot id), both ends of the vocabulary, and random rest. */
function ids(r: Rng, n: number, vocab: number): Int32Array {
  const out = r.ints(n, 0, vocab);
  for (let i = 0; i < n; i += 3) out[i] = vocab - 1;
  for (let i = 1; i < n; i += 7) out[i] = 0;
  return out;
}

describe(`embedding (engine leaf) on ${TEST_DEVICE}`, () => {
  it('forward gathers rows and backward scatter-adds them (float64 reference)', () => {
    const r = rng('embedding');
    const cases: [number, number, number[]][] = [[1, 1, [3]], [7, 13, [2, 5]], [50, 131, [4, 9]], [1000, 64, [1, 1]], [5, 3, [0]]];
    for (const [vocab, dim, shape] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const table = r.normals(vocab * dim), id = ids(r, n, vocab), dout = r.normals(n * dim);
      const out = embeddingForward(onDevice(table, [vocab, dim]), onDevice(id, [...shape]));
      assert.deepEqual(out.shape, [...shape, dim]);
      assert.equal(out.device, TEST_DEVICE);
      assertClose(values(out), embeddingReference(table, dim, id), { atol: 0, rtol: 0 }, 'rows are copied exactly');
      const dtable = embeddingBackward(onDevice(id, [...shape]), onDevice(dout, [...shape, dim]), { vocab });
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
    const dtable = onDevice(prior.slice(), [vocab, dim]);
    const result = embeddingBackward(onDevice(id), onDevice(dout, [n, dim]), { dtable });
    assert.equal(result, dtable);
    const ref = embeddingBackwardReference(id, dout, vocab, dim);
    assertClose(values(dtable), Float64Array.from(ref, (g, i) => g + prior[i]), { atol: 1e-5, rtol: 1e-5 }, 'dtable +=');
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('embedding determinism');
    const vocab = 40, dim = 131, n = 300;
    const id = onDevice(ids(r, n, vocab)), dout = onDevice(r.normals(n * dim), [n, dim]);
    const once = () => values(embeddingBackward(id, dout, { vocab }));
    assert.deepEqual(once(), once());
    if (ON_GPU) return;  // the rest is about the CPU twin's thread count
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
    it('checks ids on the device too, before writing anything, and rejects mixed devices', () => {
      const table = onDevice(new Float32Array(12), [4, 3]);
      const dout = onDevice(new Float32Array(6), [2, 3]);
      assert.throws(() => embeddingForward(table, onDevice(Int32Array.from([0, 4]))), { name: 'RangeError', message: /^ids: token id 4 at index 1 is outside \[0, 4\)/ });
      assert.throws(() => embeddingForward(table, onDevice(Int32Array.from([-1]))), { name: 'RangeError', message: /^ids: token id -1 at index 0/ });
      assert.throws(() => embeddingBackward(onDevice(Int32Array.from([0, 9])), dout, { vocab: 4 }), { name: 'RangeError', message: /^ids: token id 9 at index 1/ });
      const before = Float32Array.from({ length: 12 }, (_, i) => i);
      const dtable = onDevice(before, [4, 3]);
      assert.throws(() => embeddingBackward(onDevice(Int32Array.from([1, 7])), onDevice(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]), { dtable }), /ids: token id 7/);
      assert.deepEqual(values(dtable), before, 'dtable untouched');
      assert.throws(() => embeddingForward(table, Int32Array.from([0])), { name: 'TypeError', message: /^ids: is on cpu/ });
      assert.throws(() => embeddingBackward(Int32Array.from([0, 1]), dout, { vocab: 4 }), { name: 'TypeError', message: /is on/ });
      assert.throws(() => addon().embeddingBackward(onDevice(Int32Array.from([0, 1])), dout, {}, Tensor.from(new Float32Array(12), [4, 3])),
        { name: 'TypeError', message: /^dtable: is on cpu/ });
    });

    // Both twins copy rows exactly and add each position's gradient onto its dtable row
    // one at a time in position order, starting from the prior value: the same additions
    // in the same order, so the bits must agree exactly (tolerance 0).
    it('matches the CPU twin bit for bit, forward and backward (repeated ids, accumulation)', () => {
      const r = rng('embedding twin');
      const cases: [number, number, number][] = [[1, 1, 1], [4, 3, 0], [7, 13, 10], [50, 300, 97], [1000, 64, 2000], [3, 257, 513]];
      for (const [vocab, dim, n] of cases) {
        const label = `vocab=${vocab} dim=${dim} n=${n}`;
        const table = r.normals(vocab * dim), id = ids(r, n, vocab), dout = r.normals(n * dim), prior = r.normals(vocab * dim);
        const outCpu = embeddingForward(Tensor.from(table, [vocab, dim]), Tensor.from(id));
        const outDev = embeddingForward(onDevice(table, [vocab, dim]), onDevice(id));
        assertClose(values(outDev), values(outCpu), { atol: 0, rtol: 0 }, `forward ${label}`);
        const dtCpu = Tensor.from(prior.slice(), [vocab, dim]);
        embeddingBackward(id, Tensor.from(dout, [n, dim]), { dtable: dtCpu });
        const dtDev = onDevice(prior.slice(), [vocab, dim]);
        embeddingBackward(onDevice(id), onDevice(dout, [n, dim]), { dtable: dtDev });
        assertClose(values(dtDev), values(dtCpu), { atol: 0, rtol: 0 }, `dtable += ${label}`);
        const fresh = values(embeddingBackward(onDevice(id), onDevice(dout, [n, dim]), { vocab }));
        assertClose(fresh, values(embeddingBackward(id, Tensor.from(dout, [n, dim]), { vocab })), { atol: 0, rtol: 0 }, `dtable ${label}`);
      }
    });
  }
});

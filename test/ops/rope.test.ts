import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { addon } from '../../src/native.js';
import { ropeBackward, ropeForward, ropeTable } from '../../src/ops/rope.js';
import { ropeReference } from '../reference/rope.js';
import { ON_GPU, assertClose, dot, rng, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

const HEADS: [number, number][] = [[2, 1], [4, 2], [3, 3]];
const HEAD_DIMS = [2, 6, 10, 18, 64, 128];

function positionsFor(r: Rng, B: number, T: number, kind: 'prefill' | 'random'): Int32Array {
  const p = new Int32Array(B * T);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) p[b * T + t] = kind === 'prefill' ? t : r.int(0, 40000);
  return p;
}

describe('rope (engine leaf, CPU)', () => {
  it('follows the Hugging Face rotate_half convention (first half pairs with second half)', () => {
    // hd = 4, θ = 10000: inv_freq = [1, 0.01]; at position 1, x = e0 rotates into the
    // plane (e0, e2) by 1 radian: [cos 1, 0, sin 1, 0]. An interleaved (GPT-J) rope
    // would rotate it into (e0, e1) instead.
    const q = Tensor.from(Float32Array.from([1, 0, 0, 0]), [1, 1, 1, 4]);
    ropeForward(q, null, Int32Array.from([1]), { theta: 10000 });
    assertClose(q.data as Float32Array, [Math.cos(1), 0, Math.sin(1), 0], { atol: 1e-7, rtol: 0 }, 'rotated e0');
  });

  it('forward and backward match the float64 reference (q and k, prefill and random positions)', () => {
    const r = rng('rope');
    for (const [Hq, Hkv] of HEADS)
      for (const hd of HEAD_DIMS)
        for (const kind of ['prefill', 'random'] as const) {
          const B = 2, T = 5, theta = kind === 'prefill' ? 10000 : 1e6;
          const q0 = r.normals(B * T * Hq * hd), k0 = r.normals(B * T * Hkv * hd);
          const pos = positionsFor(r, B, T, kind);
          const q = Tensor.from(q0.slice(), [B, T, Hq, hd]), k = Tensor.from(k0.slice(), [B, T, Hkv, hd]);
          ropeForward(q, k, Tensor.from(pos, [B, T]), { theta });
          const label = `Hq=${Hq} Hkv=${Hkv} hd=${hd} ${kind}`;
          assertClose(q.data as Float32Array, ropeReference(q0, B * T, Hq, hd, pos, theta), { atol: 2e-6, rtol: 1e-5 }, `q ${label}`);
          assertClose(k.data as Float32Array, ropeReference(k0, B * T, Hkv, hd, pos, theta), { atol: 2e-6, rtol: 1e-5 }, `k ${label}`);
          ropeBackward(q, k, pos, { theta });
          // The backward is the inverse rotation, so it brings the inputs back.
          assertClose(q.data as Float32Array, q0, { atol: 4e-6, rtol: 1e-5 }, `backward∘forward q ${label}`);
          const g = r.normals(B * T * Hkv * hd), gk = Tensor.from(g.slice(), [B, T, Hkv, hd]);
          ropeBackward(gk, null, pos, { theta });
          assertClose(gk.data as Float32Array, ropeReference(g, B * T, Hkv, hd, pos, theta, -1), { atol: 2e-6, rtol: 1e-5 }, `dk ${label}`);
        }
  });

  it('the reference backward agrees with central finite differences (float64)', () => {
    const r = rng('rope fd');
    const tokens = 3, heads = 2, hd = 10, theta = 10000;
    const pos = Int32Array.from([0, 7, 1234]);
    const x = Float64Array.from(r.normals(tokens * heads * hd)), R = Float64Array.from(r.normals(tokens * heads * hd));
    const grad = ropeReference(R, tokens, heads, hd, pos, theta, -1);
    const h = 1e-5;
    for (let c = 0; c < 20; c++) {
      const i = r.int(0, x.length), keep = x[i];
      x[i] = keep + h;
      const up = dot(ropeReference(x, tokens, heads, hd, pos, theta), R);
      x[i] = keep - h;
      const down = dot(ropeReference(x, tokens, heads, hd, pos, theta), R);
      x[i] = keep;
      assertClose((up - down) / (2 * h), grad[i], { atol: 1e-8, rtol: 1e-6 }, `dx[${i}]`);
    }
  });

  it('scores depend only on relative position: <rope(q, m), rope(k, n)> = <rope(q, m+s), rope(k, n+s)>', () => {
    const r = rng('rope relative');
    const hd = 64, q0 = r.normals(hd), k0 = r.normals(hd);
    const score = (m: number, n: number) => {
      const q = Tensor.from(q0.slice(), [1, 1, hd]), k = Tensor.from(k0.slice(), [1, 1, hd]);
      ropeForward(q, null, Int32Array.from([m]), { theta: 10000 });
      ropeForward(k, null, Int32Array.from([n]), { theta: 10000 });
      return dot(q.data as Float32Array, k.data as Float32Array);
    };
    for (let c = 0; c < 5; c++) {
      const m = r.int(0, 50), n = r.int(0, 50), s = r.int(1, 200);
      assertClose(score(m + s, n + s), score(m, n), { atol: 2e-4, rtol: 1e-5 }, `shift ${s}`);
    }
  });

  it('a precomputed table gives the same bits as per-token angles; decode-shaped [B, H, hd] works', () => {
    const r = rng('rope table');
    const B = 3, Hq = 4, Hkv = 2, hd = 10, theta = 1e6;
    const table = ropeTable(theta, hd, 100);
    assert.deepEqual(table.cos.shape, [100, 5]);
    const pos = Int32Array.from([0, 57, 99]);
    const q0 = r.normals(B * Hq * hd), k0 = r.normals(B * Hkv * hd);
    const qa = Tensor.from(q0.slice(), [B, Hq, hd]), ka = Tensor.from(k0.slice(), [B, Hkv, hd]);
    const qb = Tensor.from(q0.slice(), [B, Hq, hd]), kb = Tensor.from(k0.slice(), [B, Hkv, hd]);
    ropeForward(qa, ka, pos, { theta });
    ropeForward(qb, kb, pos, { cos: table.cos, sin: table.sin });
    assert.deepEqual(qb.data, qa.data);
    assert.deepEqual(kb.data, ka.data);
    assertClose(qa.data as Float32Array, ropeReference(q0, B, Hq, hd, pos, theta), { atol: 2e-6, rtol: 1e-5 }, 'decode-shaped q');
    ropeBackward(qb, kb, pos, { cos: table.cos, sin: table.sin });
    ropeBackward(qa, ka, pos, { theta });
    assert.deepEqual(qb.data, qa.data);
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('rope determinism');
    const seed = r.int(1, 2 ** 31);
    const snippet = `
      const { ropeForward, ropeBackward } = await import(${JSON.stringify(here('../../src/ops/rope.js'))});
      const { Tensor } = await import(${JSON.stringify(here('../../src/index.js'))});
      const r = new Rng(${seed});
      const B = 4, T = 37, Hq = 6, Hkv = 2, hd = 18;
      const q = Tensor.from(r.normals(B * T * Hq * hd), [B, T, Hq, hd]), k = Tensor.from(r.normals(B * T * Hkv * hd), [B, T, Hkv, hd]);
      const pos = r.ints(B * T, 0, 30000);
      ropeForward(q, k, Tensor.from(pos, [B, T]), { theta: 1e6 });
      const fq = q.data.slice(), fk = k.data.slice();
      ropeBackward(q, k, Tensor.from(pos, [B, T]), { theta: 1e6 });
      done([fq, fk, q.data, k.data]);`;
    const hashes = [1, 2, 3, 2].map((threads) => hashInChild(threads, snippet));
    assert.equal(hashes[3], hashes[1], 'twice with 2 threads');
    assert.equal(hashes[1], hashes[0], '2 threads vs 1');
    assert.equal(hashes[2], hashes[0], '3 threads vs 1');
  });

  it('rejects bad input with errors naming the argument, before rotating anything', () => {
    const q = Tensor.from(Float32Array.from({ length: 24 }, (_, i) => i), [1, 2, 2, 6]);
    const before = Array.from(q.data as Float32Array);
    const k = Tensor.from(new Float32Array(12), [1, 2, 1, 6]);
    const pos = Tensor.from(Int32Array.from([0, 1]), [1, 2]);
    assert.throws(() => ropeForward(new Float32Array(24) as never, null, pos), /q: expected a Tensor/);
    assert.throws(() => ropeForward(Tensor.from(new Float32Array(10), [1, 2, 1, 5]), null, pos), /q: headDim must be even/);
    assert.throws(() => ropeForward(q, Tensor.from(new Float32Array(12), [2, 1, 1, 6]), pos), /k: expected shape \[1, 2, kvHeads, 6\]/);
    assert.throws(() => ropeForward(q, k, Int32Array.from([0, 1, 2])), /positions: length 3 does not fit shape \[1, 2\]/);
    assert.throws(() => ropeForward(q, k, Int32Array.from([0, -1])), /positions: position -1 at token 1/);
    assert.throws(() => ropeForward(q, k, pos, { theta: 1 }), /theta: expected > 1/);
    const table = ropeTable(10000, 6, 1);
    assert.throws(() => ropeForward(q, k, pos, { cos: table.cos, sin: table.sin }), /positions: position 1 at token 1 is outside \[0, 1\)/);
    assert.throws(() => ropeForward(q, k, pos, { cos: table.cos }), /sin: cos and sin tables go together/);
    assert.throws(() => ropeBackward(Tensor.from(new Float32Array(4), [2, 2]), null, pos), /dq: expected shape \[\.\.\., heads, headDim\]/);
    assert.throws(() => ropeTable(10000, 5, 3), /headDim: must be even/);
    assert.throws(() => ropeTable(10000, 6, -1), /positions: expected >= 0/);
    // The raw addon re-checks positions itself, before touching q.
    assert.throws(() => addon().ropeForward(q, k, Tensor.from(Int32Array.from([0, -3]), [1, 2]), {}), /positions: position -3 at token 1/);
    assert.deepEqual(Array.from(q.data as Float32Array), before);
  });

  if (ON_GPU) {
    it('says clearly that CUDA tensors are not supported yet', () => {
      const q = Tensor.from(new Float32Array(12), [1, 1, 2, 6]).to('cuda:0');
      assert.throws(() => ropeForward(q, null, Tensor.from(Int32Array.from([0]), [1, 1]).to('cuda:0')), /not yet available on CUDA/);
    });
  }
});

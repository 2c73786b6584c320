import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { addon } from '../../src/native.js';
import { ropeBackward, ropeForward, ropeTable } from '../../src/ops/rope.js';
import { ropeReference } from '../reference/rope.js';
import { ON_GPU, TEST_DEVICE, assertClose, dot, onDevice, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

const HEADS: [number, number][] = [[2, 1], [4, 2], [3, 3]];
const HEAD_DIMS = [2, 6, 10, 18, 64, 128];

function positionsFor(r: Rng, B: number, T: number, kind: 'prefill' | 'random'): Int32Array {
  const p = new Int32Array(B * T);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) p[b * T + t] = kind === 'prefill' ? t : r.int(0, 40000);
  return p;
}

describe(`rope (engine leaf) on ${TEST_DEVICE}`, () => {
  it('follows the Hugging Face rotate_half convention (first half pairs with second half)', () => {
    // hd = 4, θ = 10000: inv_freq = [1, 0.01]; at position 1, x = e0 rotates into the
    // plane (e0, e2) by 1 radian: [cos 1, 0, sin 1, 0]. An interleaved (GPT-J) rope
    // would rotate it into (e0, e1) instead.
    const q = onDevice(Float32Array.from([1, 0, 0, 0]), [1, 1, 1, 4]);
    ropeForward(q, null, onDevice(Int32Array.from([1]), [1, 1]), { theta: 10000 });
    assertClose(values(q), [Math.cos(1), 0, Math.sin(1), 0], { atol: 1e-7, rtol: 0 }, 'rotated e0');
  });

  it('forward and backward match the float64 reference (q and k, prefill and random positions)', () => {
    const r = rng('rope');
    for (const [Hq, Hkv] of HEADS)
      for (const hd of HEAD_DIMS)
        for (const kind of ['prefill', 'random'] as const) {
          const B = 2, T = 5, theta = kind === 'prefill' ? 10000 : 1e6;
          const q0 = r.normals(B * T * Hq * hd), k0 = r.normals(B * T * Hkv * hd);
          const pos = positionsFor(r, B, T, kind);
          const q = onDevice(q0.slice(), [B, T, Hq, hd]), k = onDevice(k0.slice(), [B, T, Hkv, hd]);
          const posT = onDevice(pos, [B, T]);
          ropeForward(q, k, posT, { theta });
          const label = `Hq=${Hq} Hkv=${Hkv} hd=${hd} ${kind}`;
          assertClose(values(q), ropeReference(q0, B * T, Hq, hd, pos, theta), { atol: 2e-6, rtol: 1e-5 }, `q ${label}`);
          assertClose(values(k), ropeReference(k0, B * T, Hkv, hd, pos, theta), { atol: 2e-6, rtol: 1e-5 }, `k ${label}`);
          ropeBackward(q, k, posT, { theta });
          // The backward is the inverse rotation, so it brings the inputs back.
          assertClose(values(q), q0, { atol: 4e-6, rtol: 1e-5 }, `backward∘forward q ${label}`);
          const g = r.normals(B * T * Hkv * hd), gk = onDevice(g.slice(), [B, T, Hkv, hd]);
          ropeBackward(gk, null, posT, { theta });
          assertClose(values(gk), ropeReference(g, B * T, Hkv, hd, pos, theta, -1), { atol: 2e-6, rtol: 1e-5 }, `dk ${label}`);
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
      const q = onDevice(q0.slice(), [1, 1, hd]), k = onDevice(k0.slice(), [1, 1, hd]);
      ropeForward(q, null, onDevice(Int32Array.from([m])), { theta: 10000 });
      ropeForward(k, null, onDevice(Int32Array.from([n])), { theta: 10000 });
      return dot(values(q), values(k));
    };
    for (let c = 0; c < 5; c++) {
      const m = r.int(0, 50), n = r.int(0, 50), s = r.int(1, 200);
      assertClose(score(m + s, n + s), score(m, n), { atol: 2e-4, rtol: 1e-5 }, `shift ${s}`);
    }
  });

  it('a precomputed table gives the same bits as per-token angles; decode-shaped [B, H, hd] works', () => {
    const r = rng('rope table');
    const B = 3, Hq = 4, Hkv = 2, hd = 10, theta = 1e6;
    const table = ropeTable(theta, hd, 100, TEST_DEVICE);
    assert.deepEqual(table.cos.shape, [100, 5]);
    assert.equal(table.cos.device, TEST_DEVICE);
    const posHost = Int32Array.from([0, 57, 99]), pos = onDevice(posHost);
    const q0 = r.normals(B * Hq * hd), k0 = r.normals(B * Hkv * hd);
    const qa = onDevice(q0.slice(), [B, Hq, hd]), ka = onDevice(k0.slice(), [B, Hkv, hd]);
    const qb = onDevice(q0.slice(), [B, Hq, hd]), kb = onDevice(k0.slice(), [B, Hkv, hd]);
    ropeForward(qa, ka, pos, { theta });
    ropeForward(qb, kb, pos, { cos: table.cos, sin: table.sin });
    assert.deepEqual(values(qb), values(qa));
    assert.deepEqual(values(kb), values(ka));
    assertClose(values(qa), ropeReference(q0, B, Hq, hd, posHost, theta), { atol: 2e-6, rtol: 1e-5 }, 'decode-shaped q');
    ropeBackward(qb, kb, pos, { cos: table.cos, sin: table.sin });
    ropeBackward(qa, ka, pos, { theta });
    assert.deepEqual(values(qb), values(qa));
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('rope determinism');
    if (ON_GPU) {
      const q0 = r.normals(4 * 37 * 6 * 18), pos = onDevice(r.ints(4 * 37, 0, 30000), [4, 37]);
      const once = () => {
        const q = onDevice(q0.slice(), [4, 37, 6, 18]);
        ropeForward(q, null, pos, { theta: 1e6 });
        return values(q);
      };
      assert.deepEqual(once(), once());
      return;  // the rest is about the CPU twin's thread count
    }
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
    it('checks positions on the device before rotating anything, and rejects mixed devices', () => {
      const before = Float32Array.from({ length: 24 }, (_, i) => i);
      const q = onDevice(before, [1, 2, 2, 6]), k = onDevice(new Float32Array(12), [1, 2, 1, 6]);
      const bad = onDevice(Int32Array.from([0, -3]), [1, 2]);
      assert.throws(() => ropeForward(q, k, bad), { name: 'RangeError', message: /^positions: position -3 at token 1 is outside \[0, 2\^31\)/ });
      const table = ropeTable(10000, 6, 1, TEST_DEVICE);
      assert.throws(() => ropeBackward(q, k, onDevice(Int32Array.from([0, 1]), [1, 2]), { cos: table.cos, sin: table.sin }),
        { name: 'RangeError', message: /^positions: position 1 at token 1 is outside \[0, 1\)/ });
      assert.deepEqual(values(q), before, 'q untouched');
      assert.throws(() => ropeForward(q, k, Int32Array.from([0, 1])), { name: 'TypeError', message: /^positions: is on cpu/ });
      assert.throws(() => addon().ropeForward(q, Tensor.from(new Float32Array(12), [1, 2, 1, 6]), bad, {}), { name: 'TypeError', message: /^k: is on cpu/ });
      const cpuTable = ropeTable(10000, 6, 4);
      assert.throws(() => ropeForward(q, k, onDevice(Int32Array.from([0, 1]), [1, 2]), { cos: cpuTable.cos, sin: cpuTable.sin }), { name: 'TypeError', message: /^cos: is on cpu/ });
      assert.throws(() => ropeTable(10000, 6, 4, 'gpu' as never), { name: 'TypeError', message: /^device: / });
    });

    // The table holds f32 roundings of double cos/sin; the two devices' double cos/sin
    // may differ in their last bits, so a table entry may differ by one f32 ulp
    // (2^-23 relative, allowed). Given the same table the rotation is the same fmaf over
    // the same product on both, so rotating with the CPU's table must give the CPU's bits;
    // the per-token path (angles on the fly) may move by the table's ulp: per output,
    // 2^-23·(|x1| + |x2|) plus one rounding of the result.
    it('matches the CPU twin: table, rotation with a table (bit for bit), per-token angles', () => {
      const r = rng('rope twin');
      for (const [B, T, Hq, Hkv, hd, theta] of [[0, 3, 2, 1, 6, 10000], [1, 1, 1, 1, 2, 10000], [3, 37, 4, 2, 64, 1e6], [2, 5, 3, 3, 18, 10000], [1, 9, 2, 1, 128, 5e5]] as const) {
        const label = `B=${B} T=${T} Hq=${Hq} Hkv=${Hkv} hd=${hd}`;
        const P = 3001, half = hd / 2;
        const tabCpu = ropeTable(theta, hd, P), tabDev = ropeTable(theta, hd, P, TEST_DEVICE);
        assertClose(values(tabDev.cos), values(tabCpu.cos), { atol: 1e-45, rtol: 2 ** -23 }, `cos table ${label}`);
        assertClose(values(tabDev.sin), values(tabCpu.sin), { atol: 1e-45, rtol: 2 ** -23 }, `sin table ${label}`);
        const pos = r.ints(B * T, 0, P);
        if (pos.length > 0) pos[0] = 0;
        const q0 = r.normals(B * T * Hq * hd), k0 = r.normals(B * T * Hkv * hd);
        const posDev = onDevice(pos, [B, T]);
        const withTable = { cos: onDevice(values(tabCpu.cos) as Float32Array, [P, half]), sin: onDevice(values(tabCpu.sin) as Float32Array, [P, half]) };
        for (const backward of [false, true]) {
          const op = backward ? ropeBackward : ropeForward;
          const qc = Tensor.from(q0.slice(), [B, T, Hq, hd]), kc = Tensor.from(k0.slice(), [B, T, Hkv, hd]);
          op(qc, kc, Tensor.from(pos, [B, T]), { cos: tabCpu.cos, sin: tabCpu.sin });
          const qd = onDevice(q0.slice(), [B, T, Hq, hd]), kd = onDevice(k0.slice(), [B, T, Hkv, hd]);
          op(qd, kd, posDev, withTable);
          assertClose(values(qd), values(qc), { atol: 0, rtol: 0 }, `q with the CPU table ${label} ${backward ? 'backward' : 'forward'}`);
          assertClose(values(kd), values(kc), { atol: 0, rtol: 0 }, `k with the CPU table ${label} ${backward ? 'backward' : 'forward'}`);

          const qc2 = Tensor.from(q0.slice(), [B, T, Hq, hd]);
          op(qc2, null, Tensor.from(pos, [B, T]), { theta });
          const qd2 = onDevice(q0.slice(), [B, T, Hq, hd]);
          op(qd2, null, posDev, { theta });
          const got = values(qd2), want = values(qc2);
          for (let i = 0; i < got.length; i++) {
            const j = i % hd, base = i - j, lo = j < half ? j : j - half;
            const bound = 2 ** -23 * (Math.abs(q0[base + lo]) + Math.abs(q0[base + lo + half]) + Math.abs(want[i])) + 1e-45;
            if (!(Math.abs(got[i] - want[i]) <= bound))
              assert.fail(`per-token q ${label} ${backward ? 'backward' : 'forward'} [${i}] = ${got[i]} on ${TEST_DEVICE}, ${want[i]} on the CPU`);
          }
        }
      }
    });
  }
});

// The CUDA twin of gemmBf16Weights (kernels/gemm_bf16.cu) runs the header's summation
// order with the same correctly rounded FMAs, so it must give the CPU twin's bits exactly,
// on sizes that leave every tile ragged (rows and outputs not multiples of 16, K tails
// around the 32-blocks), with NaN confined to its row. Runs where a CUDA device exists.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor, buildInfo } from '../../src/index.js';
import { gemmBf16Weights } from '../../src/ops/gemm.js';
import { fromFloat32Array } from '../../src/dtype.js';
import { rng } from '../helpers.js';

const DEVICE = buildInfo().cudaDevices.length > 0 ? 'cuda:0' : undefined;

describe('gemmBf16Weights on CUDA', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  it('gives the CPU twin\'s bits on ragged tiles and K tails', () => {
    const r = rng('gemm bf16 cuda');
    for (const [m, n, k] of [[1, 1, 1], [1, 7, 31], [3, 17, 32], [17, 5, 33], [20, 40, 95], [33, 16, 64], [2, 300, 257]]) {
      const x = Float32Array.from({ length: m * k }, () => r.normal());
      const w = fromFloat32Array(Float32Array.from({ length: n * k }, () => r.normal()), 'bf16');
      if (m > 2) x[2 * k + (k - 1)] = NaN;  // row 2 only
      const cpu = Tensor.from(new Float32Array(m * n), [m, n]);
      gemmBf16Weights(Tensor.from(x, [m, k]), Tensor.from(w, [n, k], 'bf16'), cpu);
      const dev = Tensor.zeros([m, n], 'f32', DEVICE!);
      gemmBf16Weights(Tensor.from(x, [m, k]).to(DEVICE!), Tensor.from(w, [n, k], 'bf16').to(DEVICE!), dev);
      const got = dev.to('cpu').data as Float32Array, want = cpu.data as Float32Array;
      for (let i = 0; i < got.length; i++)
        if (!Object.is(got[i], want[i])) assert.fail(`m=${m} n=${n} k=${k} y[${Math.floor(i / n)}][${i % n}] = ${got[i]} on ${DEVICE}, ${want[i]} on the CPU`);
      if (m > 2) for (let i = 0; i < m * n; i++) assert.equal(Number.isNaN(got[i]), Math.floor(i / n) === 2, `NaN outside row 2 at ${i}`);
    }
  });

  it('refuses operands on different devices', () => {
    const x = Tensor.zeros([2, 4], 'f32', DEVICE!), w = Tensor.zeros([3, 4], 'bf16'), y = Tensor.zeros([2, 3], 'f32', DEVICE!);
    assert.throws(() => gemmBf16Weights(x, w, y), /w: .*(cuda:0|cpu)/);
  });
});

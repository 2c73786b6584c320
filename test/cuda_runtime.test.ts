// The CUDA runtime as the package reports it, on every build: which GEMM the CUDA twin
// runs (cuBLASLt is loaded at run time and may be absent: the addon must load and say
// why), the matmul precision setting, and the device-memory functions' argument errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInfo, cudaMemoryStats, setMatmulPrecision } from '../src/index.js';

const info = buildInfo();

test('buildInfo().cudaMatmul names the GEMM of the CUDA twins, or why cuBLASLt is not used', () => {
  if (!info.cuda) {
    assert.equal(info.cudaMatmul, 'none (built without CUDA)');
  } else if (info.cudaEmulated) {
    assert.match(info.cudaMatmul, /^own tiled f32 GEMM \(kernels\/gemm\.cu; the emulated device never uses cuBLASLt\)$/);
  } else {
    // A real CUDA build: cuBLASLt when the machine has it, else the reason (this project's
    // build machines have no cuBLAS, so there the dlopen path must fail cleanly).
    assert.match(info.cudaMatmul, /^(cuBLASLt \d+ \(dlopen\), precision '(highest|high|medium)'|own tiled f32 GEMM \(kernels\/gemm\.cu; .+\))$/);
    if (process.env.LGRPO_CUDA_MATMUL === 'own') assert.match(info.cudaMatmul, /LGRPO_CUDA_MATMUL=own/);
  }
});

test('setMatmulPrecision takes what torch.set_float32_matmul_precision takes', () => {
  for (const p of ['medium', 'high', 'highest'] as const) setMatmulPrecision(p);
  assert.throws(() => setMatmulPrecision('low' as 'high'), /^RangeError: precision: expected 'highest', 'high' or 'medium', got "low"/);
  if (info.cuda && !info.cudaEmulated && info.cudaMatmul.startsWith('cuBLASLt')) assert.match(buildInfo().cudaMatmul, /precision 'highest'/);
});

test('cudaMemoryStats names what it expects', () => {
  assert.throws(() => cudaMemoryStats('cpu'), /device: expected a CUDA device such as 'cuda:0', got 'cpu'/);
  assert.throws(() => cudaMemoryStats('gpu0'), /device: expected 'cpu' or 'cuda:N'/);
  if (info.cuda) assert.throws(() => cudaMemoryStats('cuda:7'), /cuda:7 is not a CUDA device of this machine/);
  else assert.throws(() => cudaMemoryStats('cuda:0'), /built without CUDA/);
});

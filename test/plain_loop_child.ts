// Issue 12 item 9: a synchronous loop that drops its kernel outputs, never yielding and
// never calling release(). Node frees external ArrayBuffers only when the event loop
// turns, so before the fix every output stayed in memory (10^4 tokenLogprobsBackward
// calls on 64 × 2048 logits reached 10.9 GB). Run as a script:
//   plain_loop_child.js <calls> <boundMiB> [main|worker]
// Prints {calls, peakGrowthMiB} and exits 0; exits 1 as soon as RSS grows past the bound
// (so the old behaviour fails fast instead of taking gigabytes), or 2 if an output that
// was kept alive changed (a block freed while still reachable).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Tensor, tokenLogprobs, tokenLogprobsBackward } from '../src/index.js';

const rows = 64, vocab = 2048;

function loop(calls: number, boundMiB: number): { calls: number; peakGrowthMiB: number } {
  const logits = Float32Array.from({ length: rows * vocab }, (_, i) => 3 * Math.sin(i * 0.37));
  const targets = Int32Array.from({ length: rows }, (_, i) => (i * 31) % vocab);
  const { lse } = tokenLogprobs(logits, targets);
  const g = new Float32Array(rows).fill(1);
  const expected = Float32Array.from(tokenLogprobsBackward(logits, targets, lse, g));
  const logitsTensor = Tensor.from(logits, [rows, vocab]);
  // Kept alive in three ways (the array, a subarray of it, its bare ArrayBuffer): none of
  // these blocks may be reclaimed while reachable.
  const kept: Float32Array[] = [];
  const rss0 = process.memoryUsage().rss;
  let peak = 0;
  for (let i = 0; i < calls; i++) {
    const out = i % 2 === 0
      ? tokenLogprobsBackward(logits, targets, lse, g)
      : tokenLogprobsBackward(logitsTensor, targets, lse, g).data as Float32Array;
    if (i % 400 === 1) kept.push(out);
    else if (i % 400 === 2) kept.push(out.subarray(0, out.length));
    else if (i % 400 === 3) kept.push(new Float32Array(out.buffer));
    if (i % 50 === 0) {
      peak = Math.max(peak, process.memoryUsage().rss - rss0);
      if (peak > boundMiB * 2 ** 20) {
        console.error(`RSS grew by ${(peak / 2 ** 20).toFixed(0)} MiB after ${i} calls (bound ${boundMiB} MiB)`);
        process.exit(1);
      }
    }
  }
  for (const k of kept)
    for (let j = 0; j < expected.length; j += 97)
      if (k[j] !== expected[j]) {
        console.error(`a kept output changed at element ${j}: ${k[j]} instead of ${expected[j]}`);
        process.exit(2);
      }
  return { calls, peakGrowthMiB: Math.round(peak / 2 ** 20) };
}

if (isMainThread) {
  const calls = Number(process.argv[2] ?? 4000), boundMiB = Number(process.argv[3] ?? 384);
  if (process.argv[4] === 'worker') {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { calls, boundMiB } });
    worker.on('message', (result) => console.log(JSON.stringify(result)));
    worker.on('error', (e) => { console.error(e); process.exit(3); });
    // process.exit() in a worker ends only the worker: pass its code on.
    worker.on('exit', (code) => { if (code !== 0) process.exit(code); });
  } else {
    console.log(JSON.stringify(loop(calls, boundMiB)));
  }
} else {
  const { calls, boundMiB } = workerData as { calls: number; boundMiB: number };
  parentPort!.postMessage(loop(calls, boundMiB));
}

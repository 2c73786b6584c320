// Issue 12 item 3: kernels on worker threads while another thread resizes the pool.
// Run as a script: three workers call tokenLogprobs on 64 × 2048 logits in a loop while
// the main thread flips setNumThreads between 4 and 1, for `seconds`. Prints the number
// of kernel calls and exits 0; before the fix it deadlocked within a few seconds.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { setNumThreads, tokenLogprobs } from '../src/index.js';

const rows = 64, vocab = 2048;

if (isMainThread) {
  const seconds = Number(process.argv[2] ?? 2);
  const self = fileURLToPath(import.meta.url);
  const workers = [0, 1, 2].map((i) => new Worker(self, { workerData: { seconds, seed: i } }));
  let calls = 0;
  const done = workers.map((w) => new Promise<void>((resolve, reject) => {
    w.on('message', (n: number) => { calls += n; resolve(); });
    w.on('error', reject);
  }));
  // Flip as fast as possible: the race window is a few instructions wide.
  const end = Date.now() + seconds * 1000;
  let flips = 0;
  while (Date.now() < end) setNumThreads(flips++ % 2 === 0 ? 4 : 1);
  await Promise.all(done);
  setNumThreads(2);
  console.log(JSON.stringify({ calls, flips }));
} else {
  const { seconds, seed } = workerData as { seconds: number; seed: number };
  const logits = Float32Array.from({ length: rows * vocab }, (_, i) => Math.sin(i * (seed + 1)));
  const targets = Int32Array.from({ length: rows }, (_, i) => (i * 31) % vocab);
  const end = Date.now() + seconds * 1000;
  let n = 0;
  while (Date.now() < end) {
    tokenLogprobs(logits, targets);
    n++;
  }
  parentPort!.postMessage(n);
}

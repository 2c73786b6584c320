// `lgrpo-native bench`: the kernel benchmarks (src/bench/), with the machine's own
// bandwidth measured in the same run so every GB/s has something to be compared with.
// `bench --engine`: the policy engine end to end (training step and decoding) against
// the measured FMA ceiling and, when it can be imported, PyTorch (src/bench/engine.ts).
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import type { Device } from '../tensor.js';

interface BenchArgs {
  quick: boolean;
  json: boolean;
  only?: string;
  device: string;
  threads?: number;
  engine: boolean;
  torch: boolean;
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: 'bench',
  describe: 'Benchmark the kernels against the measured memory bandwidth and naive TypeScript (--engine: the policy engine against the FMA ceiling and PyTorch)',
  builder: (y: Argv) =>
    y
      .option('quick', { type: 'boolean', default: false, describe: 'small sizes and short timings (CI, smoke test)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON on stdout (progress stays on stderr)' })
      .option('only', {
        type: 'string',
        describe: 'comma-separated kernels: linearTokenLogprobs, tokenLogprobs, grpoLoss, groupAdvantages, lambdaWeights, gemm, attention; ' +
          'with --engine, configurations: small, qwen2.5-0.5b (--quick: small-quick, qwen-shape-quick); on cuda:N qwen2.5-0.5b, qwen2.5-1.5b (--quick: qwen-shape-quick)',
      })
      .option('engine', {
        type: 'boolean', default: false,
        describe: 'benchmark the policy engine (training step and decoding, tokens/s, GFLOP/s vs the FMA ceiling) instead of the kernels',
      })
      .option('torch', {
        type: 'boolean', default: true,
        describe: 'with --engine: run the same model in PyTorch when python3 can import torch (--no-torch skips it)',
      })
      .option('device', { type: 'string', default: 'cpu', describe: "'cpu' or 'cuda:N'" })
      .option('threads', { type: 'number', describe: 'CPU kernel threads (default: LGRPO_NUM_THREADS or all cores)' })
      .example('$0 bench --quick', 'smoke test at small sizes')
      .example('$0 bench --only tokenLogprobs,grpoLoss --json', 'two kernels, machine-readable')
      .example('$0 bench --engine', 'the engine at a small size and at Qwen2.5-0.5B\'s shape, against PyTorch when installed') as unknown as Argv<BenchArgs>,
  handler: async (args: ArgumentsCamelCase<BenchArgs>) => {
    const { parseDevice } = await import('../tensor.js');
    const { buildInfo } = await import('../build_info.js');
    if (args.threads !== undefined && (!Number.isInteger(args.threads) || args.threads < 1))
      throw new RangeError(`threads: expected a positive integer, got ${args.threads}`);
    if (args.engine) {
      const only = args.only === undefined ? undefined : args.only.split(',').map((s) => s.trim()).filter(Boolean);
      const engineDevice = parseDevice(args.device, 'device');
      if (engineDevice !== 'cpu') {
        const { runCudaEngineBench, formatCudaEngineReport } = await import('../bench/engine_cuda.js');
        const report = await runCudaEngineBench({
          device: engineDevice, quick: args.quick, only, torch: args.torch, log: (message) => process.stderr.write(`${message}\n`),
        });
        if (args.json) console.log(JSON.stringify(report, null, 2));
        else console.log(`\n${formatCudaEngineReport(report)}`);
        if (report.errors.length) process.exitCode = 1;
        return;
      }
      const { runEngineBench, formatEngineReport } = await import('../bench/engine.js');
      const report = await runEngineBench({
        quick: args.quick,
        only,
        torch: args.torch,
        threads: args.threads,
        log: (message) => process.stderr.write(`${message}\n`),
      });
      if (args.json) console.log(JSON.stringify(report, null, 2));
      else console.log(`\n${formatEngineReport(report)}`);
      if (report.errors.length) process.exitCode = 1;
      return;
    }
    const { runBench, parseKernelList, formatReport } = await import('../bench/index.js');
    const only = args.only === undefined ? undefined : parseKernelList(args.only);
    const device: Device = parseDevice(args.device, 'device');
    if (device !== 'cpu') {
      const info = buildInfo();
      const index = Number(device.slice(5));
      if (!info.cuda) throw new Error(`device: ${device} requested but this addon was built without CUDA`);
      if (!info.cudaDevices.some((d) => d.index === index))
        throw new Error(`device: ${device} is not available (usable devices: ${info.cudaDevices.map((d) => `cuda:${d.index}`).join(', ') || 'none'})`);
    }
    const report = await runBench({
      quick: args.quick,
      device,
      only,
      threads: args.threads,
      log: (message) => process.stderr.write(`${message}\n`),
    });
    if (args.json) console.log(JSON.stringify(report, null, 2));
    else console.log(`\n${formatReport(report)}`);
    if (report.errors.length) process.exitCode = 1;
  },
};

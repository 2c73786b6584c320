// `lgrpo-native bench`: the kernel benchmarks (src/bench/), with the machine's own
// bandwidth measured in the same run so every GB/s has something to be compared with.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import type { Device } from '../tensor.js';

interface BenchArgs {
  quick: boolean;
  json: boolean;
  only?: string;
  device: string;
  threads?: number;
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: 'bench',
  describe: 'Benchmark the kernels against the measured memory bandwidth and naive TypeScript',
  builder: (y: Argv) =>
    y
      .option('quick', { type: 'boolean', default: false, describe: 'small sizes and short timings (CI, smoke test)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON on stdout (progress stays on stderr)' })
      .option('only', {
        type: 'string',
        describe: 'comma-separated kernels: linearTokenLogprobs, tokenLogprobs, grpoLoss, groupAdvantages, lambdaWeights',
      })
      .option('device', { type: 'string', default: 'cpu', describe: "'cpu' or 'cuda:N'" })
      .option('threads', { type: 'number', describe: 'CPU kernel threads (default: LGRPO_NUM_THREADS or all cores)' })
      .example('$0 bench --quick', 'smoke test at small sizes')
      .example('$0 bench --only tokenLogprobs,grpoLoss --json', 'two kernels, machine-readable') as unknown as Argv<BenchArgs>,
  handler: async (args: ArgumentsCamelCase<BenchArgs>) => {
    const { parseDevice } = await import('../tensor.js');
    const { buildInfo } = await import('../build_info.js');
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
    if (args.threads !== undefined && (!Number.isInteger(args.threads) || args.threads < 1))
      throw new RangeError(`threads: expected a positive integer, got ${args.threads}`);
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

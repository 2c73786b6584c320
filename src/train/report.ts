// report.html: one self-contained page per run (or one page overlaying several runs, for
// `compare`), readable offline and from a CI artefact: the plots are inline SVG drawn
// here, so the page shows everything with scripts disabled; a small inline script only
// adds a readout of the values under the pointer. Nothing is fetched: no external
// scripts, styles, fonts or images.
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { writeFileAtomic } from '../atomic_file.js';
import { RUN_CONFIG_FILE } from './config.js';
import { METRICS_FILE, readMetrics, type MetricKind, type MetricRecord } from './metrics.js';

export const REPORT_FILE = 'report.html';

/** One held-out completion as an evaluation wrote it (samples/eval-step-N.jsonl). */
export interface EvalSample {
  prompt: string;
  answer: string;
  completion: string;
  correct: boolean;
  [field: string]: unknown;
}

export interface ReportRun {
  /** Legend label. */
  name: string;
  records: MetricRecord[];
  /** The run's config (configToJson form), shown in a table. */
  config?: Record<string, unknown> | null;
  /** Completions of some evaluations, by step (a one-run report shows the first, best and last). */
  samples?: Map<number, EvalSample[]>;
  /**
   * The runs this one summarises (compare: one loss over several seeds, `records` their mean):
   * each plot shades the band from their lowest to their highest value at every step.
   */
  seeds?: ReportRun[];
}

export interface ReportOptions {
  title?: string;
  /** Shown in the header; default now. */
  generatedAt?: Date;
  /** A table shown above the plots (compare's statistics), with notes under it. */
  summary?: { header: string[]; rows: string[][]; notes?: string[] };
}

/** One colour per role, the same in every panel: train blue, eval red, and so on. */
const ROLE_COLORS = {
  train: '#1f77b4', eval: '#d62728', correct: '#2ca02c', wrong: '#ff7f0e', warmup: '#9467bd', low: '#17becf', high: '#8c564b',
} as const;
type Role = keyof typeof ROLE_COLORS;

interface SeriesSpec {
  kind: MetricKind;
  key: string;
  label: string;
  /** Its colour in a one-run report (several runs: the colour is the run's). */
  role: Role;
  /** The x field; default 'step'. */
  x?: string;
}

type RunConfig = Record<string, unknown> | null | undefined;

interface PlotSpec {
  id: string;
  title: string;
  series: SeriesSpec[];
  /** A range always shown (widened if the data leave it). */
  yRange?: [number, number];
  /** The x axis's name; default 'step'. */
  xLabel?: string;
  /** Why the panel is empty (or flat) in a run with this config, when the config explains it. */
  why?: (config: Record<string, unknown>, records: MetricRecord[]) => string | null;
}

/** What is plotted: metric fields as metrics.ts names them. */
export const PLOTS: readonly PlotSpec[] = [
  {
    id: 'reward', title: 'Reward',
    series: [{ kind: 'train', key: 'reward_mean', label: 'train, mean', role: 'train' }, { kind: 'eval', key: 'reward_mean', label: 'eval, mean', role: 'eval' }],
  },
  {
    id: 'accuracy', title: 'Accuracy', yRange: [0, 1],
    series: [{ kind: 'eval', key: 'accuracy', label: 'eval (greedy, held out)', role: 'eval' }, { kind: 'train', key: 'accuracy', label: 'train samples', role: 'train' }],
  },
  {
    id: 'length', title: 'Mean response length (tokens)',
    series: [
      { kind: 'train', key: 'mean_length', label: 'train', role: 'train' },
      { kind: 'train', key: 'length_correct', label: 'train, correct', role: 'correct' },
      { kind: 'train', key: 'length_wrong', label: 'train, wrong', role: 'wrong' },
      { kind: 'eval', key: 'mean_length', label: 'eval', role: 'eval' },
    ],
  },
  {
    id: 'lambda', title: 'λ', series: [{ kind: 'train', key: 'lambda', label: 'λ', role: 'train' }],
    why: (c) => (c.loss !== undefined && c.loss !== 'lambda' ? `λ is learned only with --loss lambda; this run's loss is ${c.loss}.` : null),
  },
  { id: 'entropy', title: 'Entropy (nats per token)', series: [{ kind: 'train', key: 'entropy', label: 'entropy', role: 'train' }] },
  {
    id: 'clip', title: 'Clip fraction',
    series: [
      { kind: 'train', key: 'clip_frac_low', label: 'low (ρ < 1 − ε, A < 0)', role: 'low' },
      { kind: 'train', key: 'clip_frac_high', label: 'high (ρ > 1 + ε_high, A > 0)', role: 'high' },
    ],
    why: (c, records) => {
      const clipped = records.some((r) => r.kind === 'train' && ((r.clip_frac_low as number) > 0 || (r.clip_frac_high as number) > 0));
      return c.iterations === 1 && !clipped
        ? 'Clip fractions are 0 with --iterations 1: each batch is trained on by the policy that sampled it, so every ratio is 1 and nothing is clipped (raise --iterations to see clipping act).'
        : null;
    },
  },
  {
    id: 'kl', title: 'KL to the reference (k3)', series: [{ kind: 'train', key: 'kl', label: 'KL', role: 'train' }],
    why: (c) => (c.beta === 0 ? 'KL is off: --beta is 0, so there is no reference policy and no penalty (give --beta > 0 to track it).' : null),
  },
  { id: 'loss', title: 'Loss', series: [{ kind: 'train', key: 'loss', label: 'loss', role: 'train' }] },
  {
    id: 'warmup', title: 'Supervised warm-up loss (NLL per token)', xLabel: 'warm-up step',
    series: [{ kind: 'warmup', key: 'loss', label: 'warm-up loss', role: 'warmup', x: 'sft_step' }],
    why: (c) => (c['sft-steps'] === 0 ? 'No supervised warm-up in this run (--sft-steps 0).' : null),
  },
];

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
const DASHES = ['', '6 3', '2 3', '9 3 2 3'];

// Plot geometry (SVG user units).
const W = 520;
const H = 240;
const M = { left: 58, right: 14, top: 10, bottom: 34 };

function esc(text: unknown): string {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside <script>: no "</script>" or "<!--" can appear. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2).replace('e+', 'e');
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

function niceStep(span: number, target: number): number {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** A domain on nice numbers covering [lo, hi], and its ticks. */
function niceAxis(lo: number, hi: number, target: number, integer: boolean): { lo: number; hi: number; ticks: number[] } {
  if (lo === hi) {
    const pad = integer ? 1 : Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  let step = niceStep(hi - lo, target);
  if (integer) step = Math.max(1, Math.round(step));
  const start = Math.floor(lo / step + 1e-9) * step;
  const end = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; start + i * step <= end + step * 1e-9; i++) ticks.push(Number((start + i * step).toPrecision(12)));
  return { lo: start, hi: end, ticks };
}

/** [step, value] pairs; null marks a gap (a value logged as non-finite). */
type Point = [number, number | null];

function extract(records: MetricRecord[], s: SeriesSpec): Point[] {
  const points: Point[] = [];
  for (const r of records) {
    if (r.kind !== s.kind || !(s.key in r)) continue;
    const v = r[s.key];
    const x = s.x === undefined ? r.step : r[s.x];
    if (typeof x !== 'number') continue;
    points.push([x, typeof v === 'number' && Number.isFinite(v) ? v : null]);
  }
  return points;
}

interface DrawnSeries {
  run: string;
  label: string;
  color: string;
  dash: string;
  markers: boolean;
  points: Point[];
  /** [x, lowest, highest] over the run's seeds, where at least two have a value. */
  band?: Array<[number, number, number]>;
}

/** Per step, the lowest and highest finite value of a series over several runs (two or more). */
function seedBand(seeds: ReportRun[], s: SeriesSpec): Array<[number, number, number]> {
  const byX = new Map<number, number[]>();
  for (const seed of seeds)
    for (const [x, y] of extract(seed.records, s)) if (y !== null) (byX.get(x) ?? byX.set(x, []).get(x)!).push(y);
  return [...byX.entries()].filter(([, v]) => v.length >= 2).sort((a, b) => a[0] - b[0]).map(([x, v]) => [x, Math.min(...v), Math.max(...v)]);
}

function r2(v: number): string {
  return String(Math.round(v * 100) / 100);
}

function renderPlot(plot: PlotSpec, runs: ReportRun[]): { html: string; data: unknown } {
  const overlay = runs.length > 1;
  const drawn: DrawnSeries[] = [];
  runs.forEach((run, ri) => {
    plot.series.forEach((s, si) => {
      const points = extract(run.records, s);
      if (points.length === 0) return;
      drawn.push({
        run: run.name,
        label: s.label,
        color: overlay ? PALETTE[ri % PALETTE.length] : ROLE_COLORS[s.role],
        dash: overlay ? DASHES[si % DASHES.length] : '',
        markers: s.kind === 'eval',
        points,
        band: run.seeds && run.seeds.length >= 2 ? seedBand(run.seeds, s) : undefined,
      });
    });
  });

  const xs: number[] = [];
  const ys: number[] = [];
  for (const d of drawn) {
    for (const [x, y] of d.points) {
      xs.push(x);
      if (y !== null) ys.push(y);
    }
    for (const [x, lo, hi] of d.band ?? []) {
      xs.push(x);
      ys.push(lo, hi);
    }
  }
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const parts: string[] = [];
  parts.push(`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(plot.title)}" data-plot="${esc(plot.id)}">`);
  parts.push(`<rect class="frame" x="${M.left}" y="${M.top}" width="${pw}" height="${ph}"/>`);
  let axes: { x0: number; x1: number; y0: number; y1: number } | undefined;
  // The runs' configs explain an empty or flat panel better than "no data".
  const reasons = [...new Set(runs.map((run) => (plot.why && run.config ? plot.why(run.config, run.records) : null)).filter((r): r is string => r !== null))];
  const hasTrain = runs.some((run) => run.records.some((r) => r.kind === 'train' || r.kind === 'warmup' || r.kind === 'eval'));
  if (ys.length === 0) {
    const text = reasons.length ? 'nothing to plot: see below' : hasTrain ? 'not logged in this run' : 'no data yet';
    parts.push(`<text class="empty" x="${M.left + pw / 2}" y="${M.top + ph / 2}" text-anchor="middle">${esc(text)}</text>`);
  } else {
    let yLo = Math.min(...ys);
    let yHi = Math.max(...ys);
    if (plot.yRange) {
      yLo = Math.min(yLo, plot.yRange[0]);
      yHi = Math.max(yHi, plot.yRange[1]);
    }
    const xa = niceAxis(Math.min(...xs), Math.max(...xs), 6, true);
    const ya = niceAxis(yLo, yHi, 4, false);
    axes = { x0: xa.lo, x1: xa.hi, y0: ya.lo, y1: ya.hi };
    const px = (x: number) => M.left + ((x - xa.lo) / (xa.hi - xa.lo)) * pw;
    const py = (y: number) => M.top + ph - ((y - ya.lo) / (ya.hi - ya.lo)) * ph;
    for (const t of ya.ticks) {
      parts.push(`<line class="grid" x1="${M.left}" x2="${M.left + pw}" y1="${r2(py(t))}" y2="${r2(py(t))}"/>`);
      parts.push(`<text class="tick" x="${M.left - 6}" y="${r2(py(t) + 4)}" text-anchor="end">${esc(formatNumber(t))}</text>`);
    }
    for (const t of xa.ticks) {
      parts.push(`<line class="grid" x1="${r2(px(t))}" x2="${r2(px(t))}" y1="${M.top}" y2="${M.top + ph}"/>`);
      parts.push(`<text class="tick" x="${r2(px(t))}" y="${M.top + ph + 16}" text-anchor="middle">${esc(formatNumber(t))}</text>`);
    }
    parts.push(`<text class="axis" x="${M.left + pw / 2}" y="${H - 3}" text-anchor="middle">${esc(plot.xLabel ?? 'step')}</text>`);
    // Bands first, under every line.
    for (const d of drawn) {
      if (!d.band || d.band.length < 2) continue;
      const upper = d.band.map(([x, , hi]) => `${r2(px(x))},${r2(py(hi))}`);
      const lower = d.band.map(([x, lo]) => `${r2(px(x))},${r2(py(lo))}`).reverse();
      parts.push(`<polygon class="band" points="${[...upper, ...lower].join(' ')}" fill="${d.color}"><title>${esc(`${overlay ? `${d.run}: ` : ''}${d.label}: lowest to highest over seeds`)}</title></polygon>`);
    }
    for (const d of drawn) {
      const dash = d.dash ? ` stroke-dasharray="${d.dash}"` : '';
      const title = `<title>${esc(overlay ? `${d.run}: ${d.label}` : d.label)}</title>`;
      // Split at gaps so a non-finite value shows as a break, never as a drop to zero.
      let segment: string[] = [];
      const flush = () => {
        if (segment.length > 1) parts.push(`<polyline class="line" points="${segment.join(' ')}" stroke="${d.color}"${dash}>${title}</polyline>`);
        else if (segment.length === 1 && !d.markers) {
          const [x, y] = segment[0].split(',');
          parts.push(`<circle cx="${x}" cy="${y}" r="2.5" fill="${d.color}">${title}</circle>`);
        }
        segment = [];
      };
      for (const [x, y] of d.points) {
        if (y === null) flush();
        else segment.push(`${r2(px(x))},${r2(py(y))}`);
      }
      flush();
      if (d.markers)
        for (const [x, y] of d.points)
          if (y !== null)
            parts.push(`<circle cx="${r2(px(x))}" cy="${r2(py(y))}" r="3" fill="${d.color}"><title>${esc(`${overlay ? `${d.run}: ` : ''}${d.label} @ ${x}: ${formatNumber(y)}`)}</title></circle>`);
    }
    parts.push(`<line class="guide" x1="0" x2="0" y1="${M.top}" y2="${M.top + ph}" visibility="hidden"/>`);
  }
  parts.push('</svg>');

  // The legend names line styles: with one run each series has a colour; overlaid, the
  // colour is the run (see the run legend at the top) and the dash is the series.
  const legend: string[] = [];
  const seen = new Set<string>();
  for (const d of drawn) {
    const key = overlay ? d.label : `${d.label}|${d.color}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const color = overlay ? '#444' : d.color;
    const sample = `<svg class="swatch" viewBox="0 0 28 8" width="28" height="8"><line x1="1" x2="27" y1="4" y2="4" stroke="${color}" stroke-width="2"${d.dash ? ` stroke-dasharray="${d.dash}"` : ''}/>${d.markers ? `<circle cx="14" cy="4" r="3" fill="${color}"/>` : ''}</svg>`;
    legend.push(`<span class="item">${sample}${esc(d.label)}</span>`);
  }
  const why = reasons.map((r) => `<p class="why">${esc(r)}</p>`).join('');
  const html =
    `<figure class="plot" id="plot-${esc(plot.id)}"><figcaption>${esc(plot.title)}</figcaption>${parts.join('')}` +
    `<div class="legend">${legend.join('')}</div>${why}</figure>`;
  const data = {
    axes: axes ?? null,
    box: { left: M.left, top: M.top, width: pw, height: ph, W, H },
    series: drawn.map((d) => ({ run: d.run, label: d.label, color: d.color, points: d.points })),
  };
  return { html, data };
}

function lastEval(records: MetricRecord[]): MetricRecord | undefined {
  for (let i = records.length - 1; i >= 0; i--) if (records[i].kind === 'eval') return records[i];
  return undefined;
}

function lastOf(records: MetricRecord[], kind: MetricKind): MetricRecord | undefined {
  for (let i = records.length - 1; i >= 0; i--) if (records[i].kind === kind) return records[i];
  return undefined;
}

function cell(v: unknown): string {
  if (typeof v === 'number') return esc(formatNumber(v));
  if (v === null || v === undefined) return '<span class="muted">—</span>';
  if (typeof v === 'string') return esc(v);
  return esc(JSON.stringify(v));
}

function renderEvalTable(runs: ReportRun[]): string {
  const evals = runs.map((r) => lastEval(r.records));
  if (evals.every((e) => e === undefined)) return '<p class="muted">No evaluation yet.</p>';
  const first = ['accuracy', 'mean_length', 'reward_mean'];
  const keys = new Set<string>();
  for (const e of evals)
    if (e) for (const [k, v] of Object.entries(e)) if (k !== 'kind' && k !== 'step' && (typeof v === 'number' || v === null)) keys.add(k);
  const cols = [...first.filter((k) => keys.has(k)), ...[...keys].filter((k) => !first.includes(k)).sort()];
  const head = `<tr><th>run</th><th>step</th>${cols.map((c) => `<th>${esc(c)}</th>`).join('')}</tr>`;
  const rows = runs.map((run, i) => {
    const e = evals[i];
    return `<tr><td>${esc(run.name)}</td><td>${e ? e.step : cell(null)}</td>${cols.map((c) => `<td>${cell(e?.[c])}</td>`).join('')}</tr>`;
  });
  return `<table class="data"><thead>${head}</thead><tbody>${rows.join('')}</tbody></table>`;
}

/** Samples shown per evaluation. */
const SAMPLES_SHOWN = 4;

/** The first, best and last evaluations of a run, a few completions each. */
function renderSamples(run: ReportRun): string {
  if (!run.samples || run.samples.size === 0) return '';
  const evals = run.records.filter((r) => r.kind === 'eval' && typeof r.accuracy === 'number' && run.samples!.has(r.step));
  if (evals.length === 0) return '';
  let best = evals[0];
  for (const e of evals) if ((e.accuracy as number) > (best.accuracy as number)) best = e;
  const picks: Array<[string, MetricRecord]> = [['first', evals[0]], ['best', best], ['last', evals[evals.length - 1]]];
  const shown = new Set<number>();
  const sections: string[] = [];
  for (const [, e] of picks) {
    if (shown.has(e.step)) continue;
    shown.add(e.step);
    const names = picks.filter(([, x]) => x.step === e.step).map(([n]) => n).join(', ');
    const rows = run.samples.get(e.step)!.slice(0, SAMPLES_SHOWN).map((x) =>
      `<tr><td class="mono">${esc(x.prompt)}</td><td class="mono">${esc(x.completion)}</td><td>${esc(x.answer)}</td><td>${x.correct ? '✓' : '✗'}</td></tr>`);
    sections.push(
      `<h3>${esc(names)} evaluation: step ${e.step}, accuracy ${esc(formatNumber(e.accuracy as number))}</h3>` +
      `<table class="data samples"><thead><tr><th>prompt</th><th>completion (greedy)</th><th>answer</th><th></th></tr></thead><tbody>${rows.join('')}</tbody></table>`);
  }
  return `<h2>Sample completions</h2>${sections.join('')}`;
}

function renderConfigTable(runs: ReportRun[]): string {
  const configs = runs.map((r) => r.config ?? undefined);
  if (configs.every((c) => c === undefined)) return '<p class="muted">No config recorded.</p>';
  const keys: string[] = [];
  for (const c of configs) if (c) for (const k of Object.keys(c)) if (!keys.includes(k)) keys.push(k);
  if (runs.length === 1) {
    const rows = keys.map((k) => `<tr><th>${esc(k)}</th><td>${cell(configs[0]![k])}</td></tr>`);
    return `<table class="data config"><tbody>${rows.join('')}</tbody></table>`;
  }
  const head = `<tr><th>option</th>${runs.map((r) => `<th>${esc(r.name)}</th>`).join('')}</tr>`;
  const rows = keys.map((k) => {
    // Runs without a recorded config take no part in the comparison.
    const values = configs.filter((c) => c !== undefined).map((c) => JSON.stringify(c![k] ?? null));
    const differs = values.some((v) => v !== values[0]);
    return `<tr${differs ? ' class="diff"' : ''}><th>${esc(k)}</th>${configs.map((c) => `<td>${cell(c?.[k])}</td>`).join('')}</tr>`;
  });
  return (
    '<label class="toggle"><input type="checkbox" id="only-diff"> only options that differ</label>' +
    `<table class="data config" id="config-table"><thead>${head}</thead><tbody>${rows.join('')}</tbody></table>`
  );
}

function renderSummary(summary: NonNullable<ReportOptions['summary']>): string {
  const head = `<tr>${summary.header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>`;
  const body = summary.rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('');
  const notes = (summary.notes ?? []).map((n) => `<p class="muted">${esc(n)}</p>`).join('');
  return `<table class="data" id="summary"><thead>${head}</thead><tbody>${body}</tbody></table>${notes}`;
}

function renderRunLegend(runs: ReportRun[]): string {
  const items = runs.map((run, i) => {
    const train = lastOf(run.records, 'train');
    const ev = lastEval(run.records);
    const summary = [
      train ? `step ${train.step}` : 'no training step yet',
      typeof train?.reward_mean === 'number' ? `reward ${formatNumber(train.reward_mean)}` : '',
      typeof ev?.accuracy === 'number' ? `eval accuracy ${formatNumber(ev.accuracy)} @ ${ev.step}` : '',
    ].filter(Boolean).join(' · ');
    const swatch = runs.length > 1 ? `<span class="dot" style="background:${PALETTE[i % PALETTE.length]}"></span>` : '';
    return `<li>${swatch}<strong>${esc(run.name)}</strong> <span class="muted">${esc(summary)}</span></li>`;
  });
  return `<ul class="runs">${items.join('')}</ul>`;
}

const STYLE = `
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.1em;margin:28px 0 8px}
.muted{color:#777}
ul.runs{list-style:none;padding:0;margin:8px 0}ul.runs li{margin:2px 0}
.dot{display:inline-block;width:11px;height:11px;border-radius:50%;margin-right:6px;vertical-align:-1px}
.grid-plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:18px}
figure.plot{margin:0;position:relative}
figcaption{font-weight:600;margin-bottom:2px}
svg.chart{width:100%;height:auto;display:block;font-size:11px}
svg.chart .frame{fill:none;stroke:#bbb}
svg.chart .grid{stroke:#eee}
svg.chart .tick,svg.chart .axis{fill:#666}
svg.chart .empty{fill:#999;font-size:14px}
p.why{font-size:12px;color:#555;margin:4px 0 0}
h3{font-size:1em;margin:16px 0 6px}
table.samples td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;max-width:420px}
svg.chart .line{fill:none;stroke-width:1.6}
svg.chart .band{fill-opacity:.15;stroke:none}
svg.chart .guide{stroke:#999;stroke-dasharray:3 3}
.legend{font-size:12px;color:#444}.legend .item{margin-right:14px;white-space:nowrap}
.legend .swatch{vertical-align:middle;margin-right:4px}
.tip{position:absolute;pointer-events:none;background:rgba(255,255,255,.95);border:1px solid #ccc;padding:4px 6px;font-size:12px;white-space:nowrap;display:none;z-index:2}
table.data{border-collapse:collapse;font-size:13px}
table.data th,table.data td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
table.data thead th{background:#f5f5f5}
table.config tbody th{font-weight:500;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
tr.diff{background:#fff6d6}
table.hide-same tr:not(.diff){display:none}
table.hide-same thead tr{display:table-row}
.toggle{display:block;margin-bottom:6px;font-size:13px}
`;

// Pointer readout: the value of every series at the step under the pointer. Optional:
// the page is complete without it.
const SCRIPT = `
(function(){
  var data = JSON.parse(document.getElementById('report-data').textContent);
  function esc(t){ return String(t).replace(/[&<>"']/g, function(c){ return '&#'+c.charCodeAt(0)+';'; }); }
  function fmt(v){ if(v===null) return '—'; var a=Math.abs(v); if(v===0) return '0';
    if(a>=1e5||a<1e-3) return v.toExponential(2); return String(Number(v.toPrecision(4))); }
  document.querySelectorAll('svg.chart').forEach(function(svg){
    var plot = data[svg.getAttribute('data-plot')]; if(!plot||!plot.axes) return;
    var fig = svg.parentNode, tip = document.createElement('div'); tip.className='tip'; fig.appendChild(tip);
    var guide = svg.querySelector('.guide'), b = plot.box, a = plot.axes;
    svg.addEventListener('mousemove', function(ev){
      var r = svg.getBoundingClientRect(), ux = (ev.clientX - r.left) * b.W / r.width;
      if(ux < b.left || ux > b.left + b.width){ tip.style.display='none'; guide.setAttribute('visibility','hidden'); return; }
      var step = a.x0 + (ux - b.left) / b.width * (a.x1 - a.x0), rows = [], best = null;
      plot.series.forEach(function(s){
        var p = null, d = Infinity;
        s.points.forEach(function(q){ var e = Math.abs(q[0] - step); if(e < d){ d = e; p = q; } });
        if(p){ if(best===null||Math.abs(p[0]-step)<Math.abs(best-step)) best = p[0];
          rows.push('<span style="color:'+s.color+'">&#9632;</span> '+esc((data.overlay? s.run+': ' : '')+s.label)+' = '+fmt(p[1])+' <span style="color:#888">@'+p[0]+'</span>'); }
      });
      if(best===null) return;
      var gx = b.left + (best - a.x0) / (a.x1 - a.x0) * b.width;
      guide.setAttribute('x1', gx); guide.setAttribute('x2', gx); guide.setAttribute('visibility','visible');
      tip.innerHTML = rows.join('<br>'); tip.style.display='block';
      var fx = ev.clientX - fig.getBoundingClientRect().left;
      tip.style.left = Math.min(fx + 12, fig.clientWidth - tip.offsetWidth) + 'px'; tip.style.top = '24px';
    });
    svg.addEventListener('mouseleave', function(){ tip.style.display='none'; guide.setAttribute('visibility','hidden'); });
  });
  var box = document.getElementById('only-diff'), table = document.getElementById('config-table');
  if(box&&table) box.addEventListener('change', function(){ table.classList.toggle('hide-same', box.checked); });
})();
`;

/** The HTML of a report over one run, or several runs overlaid (colour per run). */
export function renderReport(runs: ReportRun[], options: ReportOptions = {}): string {
  if (!Array.isArray(runs)) throw new TypeError('runs: expected an array of {name, records, config?}');
  runs.forEach((run, i) => {
    if (typeof run?.name !== 'string' || !Array.isArray(run.records))
      throw new TypeError(`runs[${i}]: expected {name: string, records: MetricRecord[], config?}`);
  });
  const title = options.title ?? (runs.length === 1 ? `lgrpo-native run: ${runs[0].name}` : `lgrpo-native: ${runs.length} runs compared`);
  const generated = (options.generatedAt ?? new Date()).toISOString();

  const plots = PLOTS.map((p) => renderPlot(p, runs));
  const data: Record<string, unknown> = { overlay: runs.length > 1 };
  PLOTS.forEach((p, i) => (data[p.id] = plots[i].data));

  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${esc(title)}</title>`,
    `<style>${STYLE}</style>`,
    '</head><body>',
    `<h1>${esc(title)}</h1>`,
    `<p class="muted">Generated ${esc(generated)} by lgrpo-native.</p>`,
    options.summary ? renderSummary(options.summary) : '',
    runs.length ? renderRunLegend(runs) : '<p class="muted">No runs.</p>',
    `<div class="grid-plots">${plots.map((p) => p.html).join('')}</div>`,
    '<h2>Last evaluation</h2>',
    renderEvalTable(runs),
    runs.length === 1 ? renderSamples(runs[0]) : '',
    '<h2>Config</h2>',
    renderConfigTable(runs),
    `<script type="application/json" id="report-data">${scriptJson(data)}</script>`,
    `<script>${SCRIPT}</script>`,
    '</body></html>',
    '',
  ].join('\n');
}

/** Writes a report atomically (a browser never sees half a page). */
export function writeReport(path: string, runs: ReportRun[], options: ReportOptions = {}): string {
  writeFileAtomic(path, renderReport(runs, options));
  return path;
}

/** A run directory as a report input: its metrics.jsonl and config.json (either may be missing yet). */
export function loadRun(runDir: string, name?: string): ReportRun {
  const dir = resolve(runDir);
  const records = readMetrics(join(dir, METRICS_FILE), { allowMissing: true });
  let config: Record<string, unknown> | null = null;
  const configPath = join(dir, RUN_CONFIG_FILE);
  let text: string | undefined;
  try {
    text = readFileSync(configPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${configPath}: cannot read: ${(e as Error).message}`, { cause: e });
  }
  if (text !== undefined) {
    try {
      config = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new Error(`${configPath}: not valid JSON (${(e as Error).message})`, { cause: e });
    }
  }
  return { name: name ?? basename(dir), records, config, samples: loadSamples(dir) };
}

/** The run's evaluation completions (samples/eval-step-N.jsonl), by step; unreadable lines are skipped. */
function loadSamples(dir: string): Map<number, EvalSample[]> {
  const out = new Map<number, EvalSample[]>();
  let names: string[];
  try {
    names = readdirSync(join(dir, 'samples'));
  } catch {
    return out;
  }
  for (const name of names) {
    const m = /^eval-step-(\d+)\.jsonl$/.exec(name);
    if (!m) continue;
    const samples: EvalSample[] = [];
    for (const line of readFileSync(join(dir, 'samples', name), 'utf8').split('\n')) {
      if (!line.trim()) continue;
      try {
        const v = JSON.parse(line) as EvalSample;
        if (typeof v.prompt === 'string' && typeof v.completion === 'string') samples.push(v);
      } catch {
        // a line cut by a crash: the others still show
      }
    }
    out.set(Number(m[1]), samples);
  }
  return out;
}

/** (Re)writes `<runDir>/report.html` from the run's files; returns its path. */
export function writeRunReport(runDir: string, options: ReportOptions = {}): string {
  return writeReport(join(resolve(runDir), REPORT_FILE), [loadRun(runDir)], options);
}

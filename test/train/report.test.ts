// report.html: a complete page that needs nothing from the network, one chart per plot
// whose drawn points follow the data, sane with no data, and an overlay of several runs
// with a legend. User-provided text (run names, config values) is inert.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PLOTS, REPORT_FILE, loadRun, renderReport, writeRunReport, type ReportRun } from '../../src/train/report.js';
import { MetricsWriter, METRICS_FILE, type MetricRecord } from '../../src/train/metrics.js';
import { Rng } from '../../src/train/rng.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-train-report-'));
after(() => rmSync(root, { recursive: true, force: true }));
const WHEN = new Date(Date.UTC(2026, 5, 1));

function syntheticRun(name: string, steps: number, seed: number): ReportRun {
  const rng = new Rng(seed);
  const records: MetricRecord[] = [];
  for (let step = 1; step <= steps; step++) {
    records.push({
      kind: 'train', step, loss: rng.next() - 0.5, reward_mean: step / steps + 0.1 * rng.next(), accuracy: rng.next(),
      mean_length: 4 + rng.next(), length_correct: 3 + rng.next(), length_wrong: 5 + rng.next(), lambda: 0.02 * step,
      entropy: 2 - step / steps, clip_frac_low: 0.01 * rng.next(), clip_frac_high: 0.02 * rng.next(), kl: 0.001 * step,
    });
    if (step % 5 === 0) records.push({ kind: 'eval', step, accuracy: step / (steps + 1), mean_length: 4.5, reward_mean: step / steps });
  }
  return { name, records, config: { loss: 'lambda', lr: 0.001, 'group-size': 8, reward: ['math'] } };
}

const VOID = new Set(['meta', 'br', 'input', 'img', 'link', 'hr', 'col', 'area', 'base', 'wbr', 'source']);

/** Checks that every element is closed in order (inline SVG self-closes with "/>"), ignoring script and style bodies. */
function assertBalanced(html: string): void {
  const body = html.replace(/<(script|style)\b[^>]*>[\s\S]*?<\/\1>/g, '');
  const stack: string[] = [];
  for (const m of body.matchAll(/<(\/?)([a-zA-Z][\w-]*)\b[^>]*?(\/?)>/g)) {
    const [, closing, rawName, selfClosing] = m;
    const name = rawName.toLowerCase();
    if (closing) {
      const open = stack.pop();
      assert.equal(open, name, `</${name}> closes <${open}> at offset ${m.index}`);
    } else if (!selfClosing && !VOID.has(name)) {
      stack.push(name);
    }
  }
  assert.deepEqual(stack, [], 'unclosed elements');
}

function assertSelfContained(html: string): void {
  assert.ok(html.startsWith('<!DOCTYPE html>'), 'doctype');
  assert.match(html, /<meta charset="utf-8">/);
  assertBalanced(html);
  // Both scripts are closed exactly where they should be: nothing inside broke out.
  assert.equal(html.match(/<\/script>/g)?.length, 2);
  // Nothing in the markup can load a resource: no src/href attributes, no elements that
  // embed or link, no URL in any tag. (Text between tags may mention URLs: it is text.)
  const markup = html.replace(/<(script|style)\b[^>]*>[\s\S]*?<\/\1>/g, '<$1>');
  for (const tag of markup.match(/<[a-zA-Z][^>]*>/g) ?? []) {
    assert.doesNotMatch(tag, /\s(src|href|xlink:href|srcset|action|formaction|poster|data)\s*=/i, tag);
    assert.doesNotMatch(tag, /^<(link|img|iframe|object|embed|audio|video|source|base|form)\b/i, tag);
    assert.doesNotMatch(tag, /https?:\/\//i, tag);
  }
  const styles = [...html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1]).join('\n');
  assert.doesNotMatch(styles, /@import|url\(|https?:\/\//i);
  // The executable script fetches nothing; the JSON script is data only.
  const code = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]).join('\n');
  assert.ok(code.length > 0, 'an inline script');
  assert.doesNotMatch(code, /https?:\/\/|fetch\(|XMLHttpRequest|WebSocket|import\(|\.src\s*=/);
  const json = /<script type="application\/json" id="report-data">([\s\S]*?)<\/script>/.exec(html);
  assert.ok(json, 'embedded data');
  JSON.parse(json[1]);
}

/** The inner HTML of one plot's <figure>. */
function figure(html: string, id: string): string {
  const m = new RegExp(`<figure class="plot" id="plot-${id}">([\\s\\S]*?)</figure>`).exec(html);
  assert.ok(m, `figure ${id}`);
  return m[1];
}

function polylines(fragment: string): Array<{ stroke: string; points: Array<[number, number]> }> {
  return [...fragment.matchAll(/<polyline class="line" points="([^"]*)" stroke="([^"]*)"/g)].map((m) => ({
    stroke: m[2],
    points: m[1].split(' ').map((p) => p.split(',').map(Number) as [number, number]),
  }));
}

test('one run: a valid self-contained page with one chart per plot that follows the data', () => {
  const run = syntheticRun('arith-lambda', 40, 3);
  const html = renderReport([run], { generatedAt: WHEN });
  assertSelfContained(html);
  assert.equal(html.match(/<svg class="chart"/g)?.length, PLOTS.length);
  for (const plot of PLOTS) {
    const f = figure(html, plot.id);
    assert.match(f, /<svg class="chart"[\s\S]*<\/svg>/);
    assert.doesNotMatch(f, /no data yet/, plot.id);
  }
  assert.match(html, /<script>[\s\S]*addEventListener/);

  // λ rises linearly with the step: its line must go right and up (SVG y grows downwards), evenly.
  const [lambda] = polylines(figure(html, 'lambda'));
  assert.equal(lambda.points.length, 40);
  for (let i = 1; i < lambda.points.length; i++) {
    assert.ok(lambda.points[i][0] > lambda.points[i - 1][0], 'x increases with the step');
    assert.ok(lambda.points[i][1] < lambda.points[i - 1][1], 'y moves up as λ grows');
  }
  const dx = lambda.points[1][0] - lambda.points[0][0];
  const dy = lambda.points[1][1] - lambda.points[0][1];
  for (let i = 2; i < lambda.points.length; i++) {
    assert.ok(Math.abs(lambda.points[i][0] - lambda.points[i - 1][0] - dx) < 0.02, 'even x spacing');
    assert.ok(Math.abs(lambda.points[i][1] - lambda.points[i - 1][1] - dy) < 0.02, 'even y spacing');
  }
  // Evaluations are drawn as markers, one per eval line.
  const evals = run.records.filter((r) => r.kind === 'eval').length;
  const chart = /<svg class="chart"[\s\S]*?<\/svg>/.exec(figure(html, 'accuracy'))![0];
  assert.equal(chart.match(/<circle /g)?.length, evals);
  // The length plot carries train, correct, wrong and eval series, in different colours.
  const lengthLines = polylines(figure(html, 'length'));
  assert.equal(lengthLines.length, 4);
  assert.equal(new Set(lengthLines.map((l) => l.stroke)).size, 4);

  // Last evaluation and config tables.
  assert.match(html, /<h2>Last evaluation<\/h2>\s*<table class="data"><thead><tr><th>run<\/th><th>step<\/th><th>accuracy<\/th>/);
  assert.match(html, /<tr><td>arith-lambda<\/td><td>40<\/td><td>0\.9756<\/td>/);
  assert.match(html, /<tr><th>group-size<\/th><td>8<\/td><\/tr>/);
  assert.match(html, /<tr><th>reward<\/th><td>\[&quot;math&quot;\]<\/td><\/tr>/);
});

test('no data: every plot still has its chart, saying so; an empty run list is a valid page', () => {
  const html = renderReport([{ name: 'fresh', records: [] }], { generatedAt: WHEN });
  assertSelfContained(html);
  assert.equal(html.match(/<svg class="chart"/g)?.length, PLOTS.length);
  assert.equal(html.match(/no data yet/g)?.length, PLOTS.length);
  assert.match(html, /No evaluation yet/);
  assert.match(html, /No config recorded/);
  const none = renderReport([], { generatedAt: WHEN });
  assertSelfContained(none);
  assert.equal(none.match(/<svg class="chart"/g)?.length, PLOTS.length);
  // A run with only one train step draws a point, not an empty line.
  const one = renderReport([{ name: 'one', records: [{ kind: 'train', step: 1, lambda: 0.5 }] }], { generatedAt: WHEN });
  assertSelfContained(one);
  assert.match(figure(one, 'lambda'), /<circle /);
});

test('non-finite values break the line instead of dropping it to zero', () => {
  const records: MetricRecord[] = [];
  for (let step = 1; step <= 10; step++) records.push({ kind: 'train', step, kl: step === 5 ? null : step * 0.1 });
  const html = renderReport([{ name: 'gap', records }], { generatedAt: WHEN });
  const lines = polylines(figure(html, 'kl'));
  assert.equal(lines.length, 2);
  assert.deepEqual(lines.map((l) => l.points.length), [4, 5]);
});

test('overlay: several runs in one report, a colour per run, a legend, config differences marked', () => {
  const a = syntheticRun('lambda', 30, 1);
  const b = syntheticRun('grpo', 20, 2);
  b.config = { ...b.config, loss: 'grpo' };
  const c: ReportRun = { name: 'dapo (no metrics yet)', records: [] };
  const html = renderReport([a, b, c], { generatedAt: WHEN, title: 'loss comparison' });
  assertSelfContained(html);
  assert.match(html, /<title>loss comparison<\/title>/);
  assert.equal(html.match(/<svg class="chart"/g)?.length, PLOTS.length);
  // Run legend with every run and its colour.
  const legend = /<ul class="runs">([\s\S]*?)<\/ul>/.exec(html)?.[1] ?? '';
  for (const name of ['lambda', 'grpo', 'dapo (no metrics yet)']) assert.ok(legend.includes(`<strong>${name}</strong>`), name);
  const dots = [...legend.matchAll(/background:(#[0-9a-f]{6})/g)].map((m) => m[1]);
  assert.equal(new Set(dots).size, 3);
  // λ: one line per run with data, each in its run's colour, each as long as its run.
  const lambda = polylines(figure(html, 'lambda'));
  assert.deepEqual(lambda.map((l) => l.stroke), dots.slice(0, 2));
  assert.deepEqual(lambda.map((l) => l.points.length), [30, 20]);
  // Both runs share the x axis: the shorter run ends further left.
  assert.ok(lambda[1].points.at(-1)![0] < lambda[0].points.at(-1)![0]);
  // Last-eval table: a row per run, the empty run marked as such.
  assert.match(html, /<tr><td>lambda<\/td><td>30<\/td>/);
  assert.match(html, /<tr><td>grpo<\/td><td>20<\/td>/);
  assert.match(html, /<tr><td>dapo \(no metrics yet\)<\/td><td><span class="muted">—<\/span><\/td>/);
  // Config table: one column per run, the differing option marked.
  assert.match(html, /<tr class="diff"><th>loss<\/th><td>lambda<\/td><td>grpo<\/td>/);
  // (a run without a config takes no part in the comparison)
  assert.match(html, /<tr><th>lr<\/th><td>0\.001<\/td><td>0\.001<\/td><td><span class="muted">—<\/span><\/td><\/tr>/);
});

test('run names and config values are text, never markup or links', () => {
  const evil = '</script><script>alert(1)</script><img src=x onerror=alert(2)>';
  const run = syntheticRun(evil, 5, 9);
  run.config = { model: 'https://huggingface.co/Qwen/Qwen2.5-0.5B', note: evil };
  const html = renderReport([run, syntheticRun('b', 5, 10)], { generatedAt: WHEN });
  assertSelfContained(html);
  assert.ok(!html.includes('<img'), 'no injected element');
  assert.ok(html.includes('&lt;/script&gt;&lt;script&gt;alert(1)'), 'escaped in the page');
  assert.ok(html.includes('<td>https://huggingface.co/Qwen/Qwen2.5-0.5B</td>'), 'a URL in the config is shown as text');
});

test('writeRunReport reads the run directory (metrics.jsonl, config.json) and writes report.html', () => {
  const dir = mkdtempSync(join(root, 'run-'));
  // Nothing logged yet: still a report.
  writeRunReport(dir, { generatedAt: WHEN });
  assertSelfContained(readFileSync(join(dir, REPORT_FILE), 'utf8'));
  const w = MetricsWriter.open(join(dir, METRICS_FILE), { fsync: false });
  for (const r of syntheticRun('x', 10, 4).records) w.write(r);
  w.close();
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ loss: 'dapo', steps: 10 }));
  const path = writeRunReport(dir, { generatedAt: WHEN });
  assert.equal(path, join(dir, REPORT_FILE));
  const html = readFileSync(path, 'utf8');
  assertSelfContained(html);
  assert.match(html, /<tr><th>loss<\/th><td>dapo<\/td><\/tr>/);
  assert.equal(polylines(figure(html, 'lambda'))[0].points.length, 10);
  assert.equal(loadRun(dir, 'named').name, 'named');
  writeFileSync(join(dir, 'config.json'), '{');
  assert.throws(() => loadRun(dir), /config\.json: not valid JSON/);
});

test('an empty or flat panel says why, from the run\'s config; the warm-up has its loss curve; train and eval keep one colour in every panel', () => {
  const run = syntheticRun('grpo-run', 20, 5);
  for (const r of run.records) if (r.kind === 'train') {
    delete r.kl;
    delete r.lambda;
    r.clip_frac_low = 0;
    r.clip_frac_high = 0;
  }
  run.records.unshift(...[25, 50, 75, 100].map((s): MetricRecord => ({ kind: 'warmup', step: 0, sft_step: s, loss: 3 / s })));
  run.config = { loss: 'grpo', beta: 0, iterations: 1, 'sft-steps': 100 };
  const html = renderReport([run], { generatedAt: WHEN });
  assertSelfContained(html);
  assert.match(figure(html, 'kl'), /<p class="why">KL is off: --beta is 0/);
  assert.match(figure(html, 'lambda'), /<p class="why">λ is learned only with --loss lambda; this run&#39;s loss is grpo/);
  assert.match(figure(html, 'clip'), /<p class="why">Clip fractions are 0 with --iterations 1/);
  for (const id of ['kl', 'lambda']) assert.doesNotMatch(figure(html, id), /no data yet/);
  assert.doesNotMatch(figure(html, 'reward'), /class="why"/);
  // The warm-up curve: one point per logged window, x = warm-up step, falling as the loss does.
  const warm = polylines(figure(html, 'warmup'));
  assert.equal(warm.length, 1);
  assert.equal(warm[0].points.length, 4);
  for (let i = 1; i < 4; i++) {
    assert.ok(warm[0].points[i][0] > warm[0].points[i - 1][0]);
    assert.ok(warm[0].points[i][1] > warm[0].points[i - 1][1], 'a falling loss is a line going down (larger SVG y)');
  }
  assert.match(figure(html, 'warmup'), />warm-up step</);
  // Clipping that happened, or a warm-up that did not, is no longer explained away.
  run.config = { loss: 'grpo', beta: 0, iterations: 1, 'sft-steps': 0 };
  assert.match(figure(renderReport([run]), 'warmup'), /No supervised warm-up in this run/);
  // Colours by role: eval is the same colour in the reward, accuracy and length panels.
  const strokes = (id: string) => [...figure(html, id).matchAll(/<polyline[^>]*stroke="([^"]*)"[^>]*><title>([^<]*)<\/title>/g)].map((m) => [m[2], m[1]]);
  const evalColours = new Set(['reward', 'accuracy', 'length'].flatMap((id) => strokes(id).filter(([l]) => l.startsWith('eval')).map(([, c]) => c)));
  const trainColours = new Set(['reward', 'accuracy', 'length'].flatMap((id) => strokes(id).filter(([l]) => l === 'train' || l === 'train, mean' || l === 'train samples').map(([, c]) => c)));
  assert.equal(evalColours.size, 1, [...evalColours].join(' '));
  assert.equal(trainColours.size, 1, [...trainColours].join(' '));
  assert.notDeepEqual([...evalColours], [...trainColours]);
});

test('the report shows a few completions of the first, best and last evaluations', () => {
  const dir = join(root, 'with-samples');
  mkdirSync(dir, { recursive: true });
  const w = MetricsWriter.open(join(dir, METRICS_FILE));
  const acc: Record<number, number> = { 0: 0.1, 10: 0.7, 20: 0.4 };
  for (const step of [0, 10, 20]) w.write({ kind: 'eval', step, accuracy: acc[step], mean_length: 5, reward_mean: acc[step] });
  w.close();
  mkdirSync(join(dir, 'samples'));
  for (const step of [0, 10, 20])
    writeFileSync(join(dir, 'samples', `eval-step-${String(step).padStart(6, '0')}.jsonl`), Array.from({ length: 6 }, (_, i) =>
      JSON.stringify({ prompt: `p${step}-${i} <b>`, answer: String(i), completion: `#### ${i}`, correct: i % 2 === 0 })).join('\n') + '\n{"cut');
  const html = readFileSync(writeRunReport(dir), 'utf8');
  assertSelfContained(html);
  assert.deepEqual([...html.matchAll(/<h3>([^<]*)<\/h3>/g)].map((m) => m[1]),
    ['first evaluation: step 0, accuracy 0.1', 'best evaluation: step 10, accuracy 0.7', 'last evaluation: step 20, accuracy 0.4']);
  assert.equal(html.match(/<tr><td class="mono">/g)?.length, 12);  // 4 per evaluation
  assert.match(html, /p10-0 &lt;b&gt;/);  // text, never markup
});

test('compare: a mean line per loss with the band from the lowest to the highest seed', () => {
  const seeds = [1, 2, 3].map((k) => ({
    name: `seed ${k}`, config: null,
    records: [1, 2, 3].map((step): MetricRecord => ({ kind: 'train', step, reward_mean: k * step })),
  }));
  const mean: ReportRun = { name: 'grpo (mean of 3 seeds)', records: [1, 2, 3].map((step) => ({ kind: 'train', step, reward_mean: 2 * step })), seeds };
  const other: ReportRun = { name: 'dapo', records: [1, 2, 3].map((step) => ({ kind: 'train', step, reward_mean: 1 })) };
  const html = renderReport([mean, other], { generatedAt: WHEN });
  assertSelfContained(html);
  const f = figure(html, 'reward');
  const bands = [...f.matchAll(/<polygon class="band" points="([^"]*)" fill="([^"]*)">/g)];
  assert.equal(bands.length, 1);  // one run has seeds, one series of it has values
  const pts = bands[0][1].split(' ').map((p) => p.split(',').map(Number));
  assert.equal(pts.length, 6);  // upper edge over 3 steps, then the lower edge back
  const line = polylines(f).find((l) => l.stroke === bands[0][2]);
  assert.ok(line, 'the band has its line\'s colour');
  // At every step the mean (2·step) lies between the band's edges (1·step and 3·step): in SVG y, lower is larger.
  for (let i = 0; i < 3; i++) {
    const [x, yTop] = pts[i];
    const [xb, yBottom] = pts[5 - i];
    assert.equal(x, xb);
    assert.equal(line.points[i][0], x);
    assert.ok(yTop < line.points[i][1] && line.points[i][1] < yBottom, `step ${i + 1}: ${yTop} < ${line.points[i][1]} < ${yBottom}`);
  }
});

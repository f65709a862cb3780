import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bestEpoch, buildReportHtml, buildReportSvg, CHART_HEIGHT, coord, MARGIN, REPORT_WIDTH, scaleLinear } from './report';
import type { TrainLogEntry, ValidationResult } from './trainer';

const val: ValidationResult[] = [
  { epoch: 1, iteration: 10, top1Error: 0.6, top5Error: 0.2, loss: 1.5, images: 40, lr: 0.01 },
  { epoch: 2, iteration: 20, top1Error: 0.3, top5Error: 0.1, loss: 0.9, images: 40, lr: 0.01 },
  { epoch: 3, iteration: 30, top1Error: 0.35, top5Error: 0.05, loss: 1.0, images: 40, lr: 0.001 },
];
const log: TrainLogEntry[] = [5, 10, 15, 20, 25, 30].map((iteration, i) => ({ iteration, epoch: Math.ceil(iteration / 10), loss: 2 - 0.25 * i, top1Error: 0.8 - 0.1 * i, lr: 0.01, imagesPerSecond: 100, waitFraction: 0.01, time: '' }));

test('the SVG holds every point of every curve at its scaled position', () => {
  const svg = buildReportSvg({ valRecord: val, trainLog: log });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  // Loss chart: x over iterations 5..30, y from 0 to the largest loss (2).
  const x = scaleLinear(5, 30, MARGIN.left, REPORT_WIDTH - MARGIN.right);
  const y = scaleLinear(0, 2, CHART_HEIGHT - MARGIN.bottom, MARGIN.top);
  const trainLoss = log.map((e) => `${coord(x(e.iteration))},${coord(y(e.loss))}`).join(' ');
  assert.ok(svg.includes(`data-name="train loss" fill="none" stroke="#1f77b4" stroke-width="2" points="${trainLoss}"`), 'train loss polyline');
  const valLoss = val.map((r) => `${coord(x(r.iteration))},${coord(y(r.loss))}`).join(' ');
  assert.ok(svg.includes(`points="${valLoss}"`), 'val loss polyline');
  // Error chart below it: y from 0 to the largest error (0.8).
  const y2 = scaleLinear(0, 0.8, 2 * CHART_HEIGHT - MARGIN.bottom, CHART_HEIGHT + MARGIN.top);
  const valTop1 = val.map((r) => `${coord(x(r.iteration))},${coord(y2(r.top1Error))}`).join(' ');
  assert.ok(svg.includes(`points="${valTop1}"`), 'val top-1 polyline');
  assert.equal((svg.match(/<circle /g) ?? []).length, 3 * 3, 'a marker per validation point (loss, top-1, top-5)');
});

test('the HTML page is self-contained and names the best epoch', () => {
  assert.equal(bestEpoch(val)?.epoch, 2);
  const html = buildReportHtml({ valRecord: val, trainLog: log, config: { batch_size: 8, data_dir: '<a&b>' } });
  assert.match(html, /Best epoch: <strong>2<\/strong> \(iteration 20\): top-1 error 30\.00%/);
  assert.ok(html.includes('<svg'), 'inline SVG');
  assert.ok(!/<script|<link|src="http/.test(html), 'nothing external');
  assert.ok(html.includes('&quot;&lt;a&amp;b&gt;&quot;'), 'config values escaped');
  assert.match(html, /<tr class="best"><td>2<\/td>/);
});

test('empty inputs still give a valid page', () => {
  const html = buildReportHtml({ valRecord: [], trainLog: [] });
  assert.match(html, /No validation results yet/);
});

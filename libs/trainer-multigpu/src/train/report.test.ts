import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bestEpoch, buildReportHtml, buildReportSvg, CHART_HEIGHT, coord, MARGIN, REPORT_WIDTH, scaleLinear } from './report';
import type { TrainLogEntry, ValidationResult } from './trainer';

const val: ValidationResult[] = [
  { epoch: 1, iteration: 10, top1Error: 0.6, top5Error: 0.2, loss: 1.5, images: 40, lr: 0.01 },
  { epoch: 2, iteration: 20, top1Error: 0.3, top5Error: 0.1, loss: 0.9, images: 40, lr: 0.01 },
  { epoch: 3, iteration: 30, top1Error: 0.35, top5Error: 0.05, loss: 1.0, images: 40, lr: 0.001 },
];
const log: TrainLogEntry[] = [5, 10, 15, 20, 25, 30].map((iteration, i) => ({
  iteration,
  epoch: Math.ceil(iteration / 10),
  loss: 2 - 0.25 * i,
  top1Error: 0.8 - 0.1 * i,
  lr: 0.01,
  imagesPerSecond: 100,
  waitFraction: 0.01,
  time: '',
}));

test('the SVG holds every point of every curve at its scaled position', () => {
  const svg = buildReportSvg({ valRecord: val, trainLog: log });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  // The geometry the coordinates below are computed from, by hand (not with the module's own
  // scale): an 820-wide page with margins left 64, right 150, top 34, bottom 44; two charts of
  // height 320, one above the other.
  assert.deepEqual([REPORT_WIDTH, CHART_HEIGHT, MARGIN], [820, 320, { left: 64, right: 150, top: 34, bottom: 44 }]);
  // x: iterations 5..30 onto 64..670 (820 − 150): x = 64 + (it − 5)·606/25 = 64 + 24.24·(it − 5).
  // Loss chart, y: 0..2 (the largest loss) onto 276 (320 − 44)..34: y = 276 − 121·loss.
  // Train losses 2, 1.75, 1.5, 1.25, 1, 0.75 at iterations 5, 10, …, 30:
  assert.ok(
    svg.includes(
      'data-name="train loss" fill="none" stroke="#1f77b4" stroke-width="2" points="64.00,34.00 185.20,64.25 306.40,94.50 427.60,124.75 548.80,155.00 670.00,185.25"',
    ),
    'train loss polyline',
  );
  // Validation losses 1.5, 0.9, 1.0 at iterations 10, 20, 30:
  assert.ok(svg.includes('points="185.20,94.50 427.60,167.10 670.00,155.00"'), 'val loss polyline');
  // Error chart below it, y: 0..0.8 (the largest error) onto 596 (640 − 44)..354 (320 + 34):
  // y = 596 − 302.5·error; validation top-1 errors 0.6, 0.3, 0.35.
  assert.ok(svg.includes('points="185.20,414.50 427.60,505.25 670.00,490.13"'), 'val top-1 polyline');
  assert.equal((svg.match(/<circle /g) ?? []).length, 3 * 3, 'a marker per validation point (loss, top-1, top-5)');
});

test('scaleLinear maps the domain onto the range, a degenerate domain to its middle, and huge domains without overflow', () => {
  assert.equal(scaleLinear(5, 30, 64, 670)(17.5), 367);
  assert.equal(scaleLinear(0, 2, 276, 34)(0.5), 215.5);
  assert.equal(scaleLinear(3, 3, 10, 20)(3), 15);
  assert.equal(scaleLinear(-1e308, 1e308, 0, 100)(0), 50);
  assert.equal(coord(490.125), '490.13');
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

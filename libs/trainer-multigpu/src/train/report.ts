/**
 * The training report as pure functions: val_record + train_log → an SVG of loss and error
 * curves, and a self-contained HTML page (the SVG inline, the config, the best epoch). No IO
 * here: the CLI reads the files, renders a PNG from the same SVG (sharp) and writes both.
 */
import type { TrainLogEntry, ValidationResult } from './trainer';

export interface Series {
  name: string;
  color: string;
  points: Array<[number, number]>;
  /** Draw a marker at each point (sparse series such as per-epoch validation). */
  markers?: boolean;
  dashed?: boolean;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  width: number;
  height: number;
  /** Offset of the chart inside the whole SVG. */
  top?: number;
  /** Force the y range to start at 0 (errors, losses). */
  yFromZero?: boolean;
}

export const MARGIN = { left: 64, right: 150, top: 34, bottom: 44 };

/**
 * A linear map from [d0, d1] to [r0, r1]; a degenerate domain maps to the middle of the range.
 * Differences are taken of halves, so that a domain as wide as ±1e308 does not overflow.
 */
export function scaleLinear(d0: number, d1: number, r0: number, r1: number): (v: number) => number {
  if (d1 === d0) return () => (r0 + r1) / 2;
  const width = d1 / 2 - d0 / 2;
  return (v) => r0 + ((v / 2 - d0 / 2) / width) * (r1 - r0);
}

/** 4-6 round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = ((hi / 2 - lo / 2) / count) * 2;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const fmt = (v: number): string =>
  Math.abs(v) >= 1e6 ? v.toExponential(1) : Math.abs(v) >= 1000 || v === Math.round(v) ? String(Math.round(v)) : Number(v.toPrecision(3)).toString();
/** Coordinates as written into the SVG (2 decimals): tests compute the same strings. */
export const coord = (v: number): string => v.toFixed(2);

export function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** One chart (axes, ticks, legend, one polyline per series) as an SVG `<g>`. */
export function lineChart(options: ChartOptions): string {
  const { width, height, series } = options;
  const top = options.top ?? 0;
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xMin = xs.length ? Math.min(...xs) : 0;
  const xMax = xs.length ? Math.max(...xs) : 1;
  // From zero (errors, losses), or from below it when a value is negative (still drawn inside).
  const yMin = options.yFromZero ? Math.min(0, ...ys) : ys.length ? Math.min(...ys) : 0;
  const yMax = ys.length ? Math.max(...ys, yMin + 1e-9) : 1;
  const x = scaleLinear(xMin, xMax, MARGIN.left, width - MARGIN.right);
  const y = scaleLinear(yMin, yMax, top + height - MARGIN.bottom, top + MARGIN.top);
  const parts: string[] = [`<g class="chart" data-title="${escapeXml(options.title)}">`];
  parts.push(
    `<text x="${width / 2 - MARGIN.right / 2}" y="${top + 20}" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`,
  );
  const x0 = MARGIN.left;
  const x1 = width - MARGIN.right;
  const yBottom = top + height - MARGIN.bottom;
  const yTop = top + MARGIN.top;
  parts.push(`<rect x="${x0}" y="${yTop}" width="${x1 - x0}" height="${yBottom - yTop}" fill="#fff" stroke="#999"/>`);
  for (const t of niceTicks(yMin, yMax)) {
    const ty = coord(y(t));
    parts.push(
      `<line x1="${x0}" x2="${x1}" y1="${ty}" y2="${ty}" stroke="#eee"/><text x="${x0 - 6}" y="${ty}" dy="4" text-anchor="end" font-size="11">${fmt(t)}</text>`,
    );
  }
  for (const t of niceTicks(xMin, xMax)) {
    const tx = coord(x(t));
    parts.push(
      `<line x1="${tx}" x2="${tx}" y1="${yBottom}" y2="${yBottom + 4}" stroke="#999"/><text x="${tx}" y="${yBottom + 17}" text-anchor="middle" font-size="11">${fmt(t)}</text>`,
    );
  }
  parts.push(`<text x="${(x0 + x1) / 2}" y="${yBottom + 36}" text-anchor="middle" font-size="12">${escapeXml(options.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${(yTop + yBottom) / 2}) rotate(-90)" text-anchor="middle" font-size="12">${escapeXml(options.yLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = s.points.filter(([px, py]) => Number.isFinite(px) && Number.isFinite(py));
    const path = pts.map(([px, py]) => `${coord(x(px))},${coord(y(py))}`).join(' ');
    if (pts.length) {
      parts.push(
        `<polyline class="series" data-name="${escapeXml(s.name)}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${path}"/>`,
      );
    }
    if (s.markers) {
      for (const [px, py] of pts)
        parts.push(
          `<circle cx="${coord(x(px))}" cy="${coord(y(py))}" r="3" fill="${s.color}"><title>${escapeXml(s.name)} at ${fmt(px)}: ${fmt(py)}</title></circle>`,
        );
    }
    const ly = yTop + 14 + i * 18;
    parts.push(
      `<line x1="${x1 + 10}" x2="${x1 + 30}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/><text x="${x1 + 36}" y="${ly}" dy="4" font-size="12">${escapeXml(s.name)}</text>`,
    );
  });
  parts.push('</g>');
  return parts.join('\n');
}

export interface ReportInput {
  valRecord: ValidationResult[];
  trainLog: TrainLogEntry[];
  /** The config of the run (from the latest checkpoint's state.json), shown as a table. */
  config?: Record<string, unknown>;
  title?: string;
}

export const REPORT_WIDTH = 820;
export const CHART_HEIGHT = 320;

/** The two charts (loss; top-1/top-5 error) against the iteration, one SVG document. */
export function buildReportSvg(input: ReportInput): string {
  const { valRecord, trainLog } = input;
  const lossChart = lineChart({
    title: 'Loss',
    xLabel: 'iteration',
    yLabel: 'softmax cross-entropy',
    width: REPORT_WIDTH,
    height: CHART_HEIGHT,
    yFromZero: true,
    series: [
      { name: 'train loss', color: '#1f77b4', points: trainLog.map((e) => [e.iteration, e.loss]) },
      { name: 'val loss', color: '#d62728', points: valRecord.map((r) => [r.iteration, r.loss]), markers: true },
    ],
  });
  const errorChart = lineChart({
    title: 'Error',
    xLabel: 'iteration',
    yLabel: 'error rate',
    width: REPORT_WIDTH,
    height: CHART_HEIGHT,
    top: CHART_HEIGHT,
    yFromZero: true,
    series: [
      { name: 'train top-1', color: '#1f77b4', points: trainLog.filter((e) => e.top1Error !== undefined).map((e) => [e.iteration, e.top1Error!]) },
      { name: 'val top-1', color: '#d62728', points: valRecord.map((r) => [r.iteration, r.top1Error]), markers: true },
      { name: 'val top-5', color: '#ff7f0e', points: valRecord.map((r) => [r.iteration, r.top5Error]), markers: true, dashed: true },
    ],
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${REPORT_WIDTH}" height="${2 * CHART_HEIGHT}" viewBox="0 0 ${REPORT_WIDTH} ${2 * CHART_HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fafafa"/>`,
    lossChart,
    errorChart,
    '</svg>',
  ].join('\n');
}

/** The epoch with the lowest top-1 validation error (the first of equals), or undefined. */
export function bestEpoch(valRecord: ValidationResult[]): ValidationResult | undefined {
  let best: ValidationResult | undefined;
  for (const r of valRecord) if (Number.isFinite(r.top1Error) && (!best || r.top1Error < best.top1Error)) best = r;
  return best;
}

/** A value that may be NaN (no result), infinite or huge, as table text. */
function special(v: number): string | undefined {
  if (Number.isNaN(v)) return '–';
  if (v === Infinity) return '∞';
  if (v === -Infinity) return '−∞';
  return undefined;
}
const pct = (v: number): string =>
  special(v) ??
  (Math.abs(v) < 1e6 ? `${(100 * v).toFixed(2)}%` : Number.isFinite(100 * v) ? `${(100 * v).toExponential(2)}%` : `${v.toExponential(2)} (as a fraction)`);
const decimals = (v: number, digits: number): string => special(v) ?? (Math.abs(v) < 1e15 ? v.toFixed(digits) : v.toExponential(3));

export function buildReportHtml(input: ReportInput, svg = buildReportSvg(input)): string {
  const title = input.title ?? 'alexnet-stream training report';
  const best = bestEpoch(input.valRecord);
  const last = input.valRecord[input.valRecord.length - 1];
  const rows = input.valRecord
    .map(
      (r) =>
        `<tr${best && r.epoch === best.epoch ? ' class="best"' : ''}><td>${r.epoch}</td><td>${r.iteration}</td><td>${pct(r.top1Error)}</td><td>${pct(r.top5Error)}</td><td>${decimals(r.loss, 4)}</td><td>${r.lr ?? '–'}</td></tr>`,
    )
    .join('\n');
  const config = input.config
    ? Object.entries(input.config)
        .map(([k, v]) => `<tr><td><code>${escapeXml(k)}</code></td><td><code>${escapeXml(JSON.stringify(v))}</code></td></tr>`)
        .join('\n')
    : '';
  const lastLog = input.trainLog[input.trainLog.length - 1];
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeXml(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:900px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}tr.best{background:#e8f5e9;font-weight:bold}.config td{text-align:left}
.summary{font-size:1.1em}
</style></head><body>
<h1>${escapeXml(title)}</h1>
<p class="summary">${
    best
      ? `Best epoch: <strong>${best.epoch}</strong> (iteration ${best.iteration}): top-1 error ${pct(best.top1Error)}, top-5 error ${pct(best.top5Error)}, loss ${decimals(best.loss, 4)}.`
      : 'No validation results yet.'
  }${last ? ` Last epoch: ${last.epoch}, top-1 error ${pct(last.top1Error)}.` : ''}${
    lastLog
      ? ` Last logged iteration: ${lastLog.iteration} (${decimals(lastLog.imagesPerSecond, 1)} img/s, engine waited ${pct(lastLog.waitFraction)} of the time).`
      : ''
  }</p>
${svg}
<h2>Validation per epoch</h2>
<table><tr><th>epoch</th><th>iteration</th><th>top-1 error</th><th>top-5 error</th><th>loss</th><th>lr</th></tr>
${rows}
</table>
${config ? `<h2>Config</h2>\n<table class="config">\n${config}\n</table>` : ''}
</body></html>
`;
}

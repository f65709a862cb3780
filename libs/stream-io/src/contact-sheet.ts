/**
 * Contact sheets: the first N images of a stream as a labelled grid PNG (sharp composes the
 * tiles; captions, class name + key, are an SVG overlay composited by sharp).
 *
 * `tilesFromRecord` extracts tiles from image or batch records (float32, i.e. augmented, batches
 * are stretched per image from their min..max to 0..255 so they stay visible);
 * `renderContactSheet` draws them. A collector keeps at most `count` tiles.
 */
import type { OverlayOptions } from 'sharp';
import { check, checkOptional, UsageError } from '@alexnet-stream/core';
import { loadSharp } from './sharp-lazy';
import type { StreamRecord } from './records';

/** One image to draw: CHW pixels (1 or 3 channels) and its caption. */
export interface ContactTile {
  channels: number;
  height: number;
  width: number;
  /** uint8 CHW */
  data: Uint8Array;
  /** Two caption lines: the class name (or label) and the record key. */
  caption: string;
  detail: string;
}

export interface ContactSheetOptions {
  /** Tile side in pixels (images are fitted inside, aspect kept). Default 128. */
  tileSize?: number;
  /** Tiles per row. Default: ceil(sqrt(count)). */
  columns?: number;
}

const CAPTION_HEIGHT = 28;
const CHAR_WIDTH = 6.2; // approximate advance of 10 px sans-serif
const GAP = 4;

function toUint8(values: Float32Array, start: number, length: number): Uint8Array {
  let min = Infinity;
  let max = -Infinity;
  for (let i = start; i < start + length; i++) {
    if (values[i] < min) min = values[i];
    if (values[i] > max) max = values[i];
  }
  const scale = max > min ? 255 / (max - min) : 0;
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.round((values[start + i] - min) * scale);
  return out;
}

/** Tiles for the images of one record (at most `max`); `classNames` turn labels into names. */
export function tilesFromRecord(record: StreamRecord, classNames: string[] | undefined, max = Infinity): ContactTile[] {
  const caption = (label: number): string => classNames?.[label] ?? `label ${label}`;
  if (record.type === 'image') {
    if (max < 1) return [];
    return [{ channels: record.channels, height: record.height, width: record.width, data: record.data, caption: caption(record.label), detail: record.key }];
  }
  if (record.type !== 'batch') return [];
  const [n, c, h, w] = record.shape;
  const size = c * h * w;
  const tiles: ContactTile[] = [];
  for (let i = 0; i < Math.min(n, max); i++) {
    const data =
      record.dtype === 'uint8' ? (record.data as Uint8Array).subarray(i * size, (i + 1) * size) : toUint8(record.data as Float32Array, i * size, size);
    tiles.push({ channels: c, height: h, width: w, data, caption: caption(record.labels[i]), detail: record.keys[i] });
  }
  return tiles;
}

function chwToHwc(tile: ContactTile): { data: Buffer; channels: 1 | 3 } {
  const { channels, height, width, data } = tile;
  const outChannels = channels >= 3 ? 3 : 1;
  const plane = height * width;
  const out = Buffer.alloc(plane * outChannels);
  for (let c = 0; c < outChannels; c++) {
    const base = c * plane;
    for (let p = 0; p < plane; p++) out[p * outChannels + c] = data[base + p];
  }
  return { data: out, channels: outChannels };
}

function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (ch) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[ch]!);
}

const checkTileSize = (tileSize: number | undefined) => checkOptional.integer('tileSize', tileSize, { min: 8, max: 1024 });

/** The PNG of a grid of `tiles`, each with its caption below it. */
export async function renderContactSheet(tiles: ContactTile[], options: ContactSheetOptions = {}): Promise<Buffer> {
  if (tiles.length === 0) throw new UsageError('no images to draw: the input holds no image or batch records');
  const tileSize = checkTileSize(options.tileSize) ?? 128;
  const columns = Math.max(1, Math.min(tiles.length, options.columns ?? Math.ceil(Math.sqrt(tiles.length))));
  const rows = Math.ceil(tiles.length / columns);
  const cellWidth = tileSize + GAP;
  const cellHeight = tileSize + CAPTION_HEIGHT + GAP;
  const width = columns * cellWidth + GAP;
  const height = rows * cellHeight + GAP;
  const composites: OverlayOptions[] = [];
  const captions: string[] = [];
  for (let i = 0; i < tiles.length; i++) {
    const left = GAP + (i % columns) * cellWidth;
    const top = GAP + Math.floor(i / columns) * cellHeight;
    const { data, channels } = chwToHwc(tiles[i]);
    const fitted = await loadSharp()(data, { raw: { width: tiles[i].width, height: tiles[i].height, channels } })
      .resize(tileSize, tileSize, { fit: 'contain', background: { r: 32, g: 32, b: 32 }, kernel: 'nearest' })
      .toColorspace('srgb')
      .png()
      .toBuffer();
    composites.push({ input: fitted, left, top });
    const maxChars = Math.max(3, Math.floor(tileSize / CHAR_WIDTH));
    const name = tiles[i].caption.length > maxChars ? `${tiles[i].caption.slice(0, maxChars - 1)}…` : tiles[i].caption;
    // keys are paths: keep their distinctive end
    const key = tiles[i].detail.length > maxChars ? `…${tiles[i].detail.slice(-(maxChars - 1))}` : tiles[i].detail;
    const x = left + tileSize / 2;
    captions.push(
      `<text x="${x}" y="${top + tileSize + 12}" text-anchor="middle" font-weight="bold">${escapeXml(name)}</text>` +
        `<text x="${x}" y="${top + tileSize + 24}" text-anchor="middle" fill="#a0a0a0">${escapeXml(key)}</text>`,
    );
  }
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<g font-family="sans-serif" font-size="10" fill="#e0e0e0">${captions.join('')}</g></svg>`;
  composites.push({ input: Buffer.from(svg), left: 0, top: 0 });
  return loadSharp()({ create: { width, height, channels: 3, background: { r: 16, g: 16, b: 16 } } })
    .composite(composites)
    .png()
    .toBuffer();
}

/** Collects the first `count` tiles of a stream; `add` for each record, `full` once enough. */
export class ContactSheetCollector {
  readonly tiles: ContactTile[] = [];
  private classNames: string[] | undefined;

  /** `tileSize`, when given, is checked here, so that a bad one is refused before a stream is read for the sheet. */
  constructor(
    readonly count: number,
    options: Pick<ContactSheetOptions, 'tileSize'> = {},
  ) {
    check.integer('count', count, { min: 1, max: 10000 });
    checkTileSize(options.tileSize);
  }

  get full(): boolean {
    return this.tiles.length >= this.count;
  }

  add(record: StreamRecord): void {
    if (record.type === 'header') {
      this.classNames = record.classNames;
      return;
    }
    if (this.full) return;
    // Copy: a tile must not pin (or alias) a whole batch buffer that a producer may reuse.
    for (const tile of tilesFromRecord(record, this.classNames, this.count - this.tiles.length)) this.tiles.push({ ...tile, data: Uint8Array.from(tile.data) });
  }
}

/**
 * A small, deterministic, learnable image data set, generated (no downloads) for the demo,
 * the end-to-end tests and the training smoke tests.
 *
 * Six classes, each a *kind of structure* rather than a colour, so a small CNN must learn
 * shapes and orientations: disk, square, triangle (a shape on a gradient background) and
 * checkerboard, horizontal-stripes, vertical-stripes (a texture over the whole image). Every
 * image varies in size (160..520 px per side, aspect ratio up to 2:1), position, scale, a small
 * rotation, colours (foreground and background drawn from opposite halves of the brightness
 * range, so the structure is always visible), pixel noise and JPEG quality (75..95). Shapes
 * stay within the central region, so a 227 crop of the 256x256 squash still shows them.
 *
 * Layout (ImageNet-like, with Caffe-style lists):
 *   train/<class>/<class>_0000.jpg    train.txt ("<class>/<file> label", relative to train/)
 *   val/val_00000.jpg                 val.txt   ("<file> label", relative to val/; classes mixed)
 *   classes.txt                       one class name per line, label order (= sorted names)
 * Same seed → byte-identical files (pure JS rendering + libvips' deterministic JPEG encoder).
 */
import * as path from 'node:path';
import { check, makeDirectory, Rng, writeFileAtomic } from '@alexnet-stream/core';
import { loadSharp } from './sharp-lazy';

/** Sorted, so that sorted folder names (scan's labels) and these indices agree. */
export const DEMO_CLASSES = ['checkerboard', 'disk', 'horizontal-stripes', 'square', 'triangle', 'vertical-stripes'] as const;
export type DemoClass = (typeof DEMO_CLASSES)[number];

export interface DemoDatasetOptions {
  seed: number;
  trainPerClass: number;
  valPerClass: number;
}

export interface DemoDatasetSummary {
  classNames: string[];
  train: number;
  val: number;
}

export interface RenderedImage {
  width: number;
  height: number;
  /** HWC, RGB, uint8. */
  pixels: Uint8Array;
  quality: number;
}

function brightColour(rng: Rng, light: boolean): [number, number, number] {
  // one half of the brightness range per channel, with a random hue: fg and bg never blend
  const pick = () => (light ? 150 + rng.nextInt(106) : rng.nextInt(106));
  return [pick(), pick(), pick()];
}

const SQRT3 = Math.sqrt(3);

/** Renders one image of class `label` (pure: the same rng state gives the same pixels). */
export function renderDemoImage(label: number, rng: Rng): RenderedImage {
  const kind = DEMO_CLASSES[label];
  if (kind === undefined) throw new RangeError(`demo class label ${label} out of range`);
  const width = 160 + rng.nextInt(361);
  const minH = Math.max(160, Math.ceil(width / 2));
  const maxH = Math.min(520, width * 2);
  const height = minH + rng.nextInt(maxH - minH + 1);
  const fgLight = rng.nextInt(2) === 1;
  const fg = brightColour(rng, fgLight);
  const bgA = brightColour(rng, !fgLight);
  const bgB = brightColour(rng, !fgLight);
  const gradAngle = rng.nextFloat() * 2 * Math.PI;
  const gx = Math.cos(gradAngle),
    gy = Math.sin(gradAngle);
  const noise = 4 + rng.nextFloat() * 16;
  const quality = 75 + rng.nextInt(21);
  const short = Math.min(width, height);
  // small rotation (±15°): orientation classes stay unambiguous, shapes are not axis-perfect
  const theta = (rng.nextFloat() - 0.5) * (Math.PI / 6);
  const cos = Math.cos(theta),
    sin = Math.sin(theta);
  const cx = width * (0.38 + 0.24 * rng.nextFloat());
  const cy = height * (0.38 + 0.24 * rng.nextFloat());
  const radius = short * (0.2 + 0.13 * rng.nextFloat());
  const period = 10 + rng.nextInt(23); // stripes/checker period in px (>= 5 px after a 520 → 256 squash)
  const phase = rng.nextFloat() * period;

  /** Is the pixel at (x, y) foreground? (u, v) = coordinates rotated by -theta around the centre. */
  const inside = (x: number, y: number): boolean => {
    const dx = x - cx,
      dy = y - cy;
    const u = dx * cos + dy * sin;
    const v = -dx * sin + dy * cos;
    switch (kind) {
      case 'disk':
        return u * u + v * v <= radius * radius;
      case 'square':
        return Math.abs(u) <= radius * 0.9 && Math.abs(v) <= radius * 0.9;
      case 'triangle': {
        // equilateral, apex up (image y grows downwards), centroid at the centre, circumradius r:
        // vertices (0, -r) and (±r·√3/2, r/2); the half-width at height v is (v + r)/√3
        const r = radius * 1.15;
        return v >= -r && v <= r / 2 && Math.abs(u) <= (v + r) / SQRT3;
      }
      case 'horizontal-stripes':
        return Math.floor((v + phase + 1e4 * period) / (period / 2)) % 2 === 0;
      case 'vertical-stripes':
        return Math.floor((u + phase + 1e4 * period) / (period / 2)) % 2 === 0;
      case 'checkerboard':
        return (Math.floor((u + phase + 1e4 * period) / period) + Math.floor((v + phase + 1e4 * period) / period)) % 2 === 0;
    }
  };

  const pixels = new Uint8Array(width * height * 3);
  const diag = Math.abs(gx) * width + Math.abs(gy) * height;
  const offset = (gx < 0 ? -gx * width : 0) + (gy < 0 ? -gy * height : 0);
  for (let y = 0, o = 0; y < height; y++) {
    for (let x = 0; x < width; x++, o += 3) {
      let r: number, g: number, b: number;
      if (inside(x, y)) {
        [r, g, b] = fg;
      } else {
        const t = (x * gx + y * gy + offset) / diag; // 0..1 along the gradient
        r = bgA[0] + (bgB[0] - bgA[0]) * t;
        g = bgA[1] + (bgB[1] - bgA[1]) * t;
        b = bgA[2] + (bgB[2] - bgA[2]) * t;
      }
      // triangular noise: one luminance draw plus a smaller colour draw per pixel, from one uint32
      const bits = rng.nextUint32();
      const lum = (((bits & 255) + ((bits >>> 8) & 255)) / 255 - 1) * noise;
      const chroma = noise / 3 / 127.5;
      pixels[o] = clamp(r + lum + (((bits >>> 16) & 255) - 127.5) * chroma);
      pixels[o + 1] = clamp(g + lum + (((bits >>> 24) & 255) - 127.5) * chroma);
      pixels[o + 2] = clamp(b + lum);
    }
  }
  return { width, height, pixels, quality };
}

function clamp(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
}

export function encodeDemoJpeg(image: RenderedImage): Promise<Buffer> {
  return loadSharp()(image.pixels, { raw: { width: image.width, height: image.height, channels: 3 } })
    .jpeg({ quality: image.quality, chromaSubsampling: '4:2:0' })
    .toBuffer();
}

/**
 * The project's atomic write (temp file removed on failure; a full disk is an OutputError naming
 * the file, exit 2, where a raw ENOSPC was exit 1 and left the temp file); no fsync per image:
 * the data set is regenerated from its seed, not precious.
 */
function writeAtomic(file: string, data: string | Buffer): Promise<void> {
  return writeFileAtomic(file, data, { fsync: false });
}

/**
 * Generate the demo data set into `outDir` (created if needed; files of the same names are
 * replaced). Each image's randomness comes from its own Rng seeded by (seed, split, class,
 * index), so any one image can be regenerated alone and the files do not depend on timing.
 */
export async function generateDemoDataset(outDir: string, options: DemoDatasetOptions): Promise<DemoDatasetSummary> {
  const { seed, trainPerClass, valPerClass } = options;
  check.seed('seed', seed);
  check.integer('trainPerClass', trainPerClass, { min: 1, max: 100000 });
  check.integer('valPerClass', valPerClass, { min: 0, max: 100000 });
  const classNames = [...DEMO_CLASSES];
  const K = classNames.length;
  await makeDirectory(path.join(outDir, 'val'), 'demo data folder');
  for (const name of classNames) await makeDirectory(path.join(outDir, 'train', name), 'demo data folder');

  interface Job {
    file: string;
    label: number;
    rngSeed: number;
  }
  const jobs: Job[] = [];
  const imageSeed = (split: number, label: number, index: number) =>
    (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + split * 0x01000193 + label * 0x100003 + index * 0x3b9aca07) >>> 0;
  const trainLines: string[] = [];
  for (let label = 0; label < K; label++) {
    for (let i = 0; i < trainPerClass; i++) {
      const rel = `${classNames[label]}/${classNames[label]}_${String(i).padStart(4, '0')}.jpg`;
      jobs.push({ file: path.join(outDir, 'train', rel), label, rngSeed: imageSeed(0, label, i) });
      trainLines.push(`${rel} ${label}`);
    }
  }
  // val: classes interleaved in a seeded random order, so file names do not reveal labels
  const valLabels: number[] = [];
  for (let label = 0; label < K; label++) for (let i = 0; i < valPerClass; i++) valLabels.push(label);
  new Rng(imageSeed(2, 0, 0)).shuffle(valLabels);
  const valLines: string[] = [];
  valLabels.forEach((label, i) => {
    const name = `val_${String(i).padStart(5, '0')}.jpg`;
    jobs.push({ file: path.join(outDir, 'val', name), label, rngSeed: imageSeed(1, label, i) });
    valLines.push(`${name} ${label}`);
  });

  // Render on this thread, encode and write on libvips' threads: a small window overlaps them.
  const window = 4;
  let next = 0;
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < jobs.length) {
        const job = jobs[next++];
        const image = renderDemoImage(job.label, new Rng(job.rngSeed));
        await writeAtomic(job.file, await encodeDemoJpeg(image));
      }
    }),
  );
  await writeAtomic(path.join(outDir, 'train.txt'), `${trainLines.join('\n')}\n`);
  await writeAtomic(path.join(outDir, 'val.txt'), valLines.join('\n') + (valLines.length ? '\n' : ''));
  await writeAtomic(path.join(outDir, 'classes.txt'), `${classNames.join('\n')}\n`);
  return { classNames, train: trainLines.length, val: valLines.length };
}

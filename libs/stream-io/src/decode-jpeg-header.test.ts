import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { readJpegHeader } from './decode-jpeg-header';

function image(width: number, height: number, channels: 1 | 3): ReturnType<typeof sharp> {
  const buf = Buffer.alloc(width * height * channels);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 37) & 255;
  return sharp(buf, { raw: { width, height, channels } });
}

test('readJpegHeader: size, precision and components of colour, gray, progressive and CMYK JPEGs', async () => {
  assert.deepEqual(readJpegHeader(await image(37, 23, 3).jpeg().toBuffer()), {
    width: 37,
    height: 23,
    precision: 8,
    components: 3,
    orientation: 1,
    hasIccProfile: false,
  });
  assert.equal(readJpegHeader(await image(20, 30, 1).toColourspace('b-w').jpeg().toBuffer())?.components, 1);
  const progressive = readJpegHeader(await image(640, 480, 3).jpeg({ progressive: true }).toBuffer());
  assert.equal(progressive?.width, 640);
  assert.equal(progressive?.height, 480);
  assert.equal(readJpegHeader(await image(16, 16, 3).toColourspace('cmyk').jpeg().toBuffer())?.components, 4);
});

test('readJpegHeader: EXIF orientation and ICC profile', async () => {
  for (const orientation of [1, 3, 6, 8]) {
    const jpeg = await image(16, 8, 3).jpeg().withMetadata({ orientation }).toBuffer();
    assert.equal(readJpegHeader(jpeg)?.orientation, orientation, `orientation ${orientation}`);
  }
  const icc = await image(16, 8, 3).jpeg().withIccProfile('p3').toBuffer();
  assert.equal(readJpegHeader(icc)?.hasIccProfile, true);
});

test('readJpegHeader: undefined for what is not a whole JPEG header', async () => {
  const jpeg = await image(16, 16, 3).jpeg().withMetadata({ orientation: 1 }).toBuffer();
  assert.equal(readJpegHeader(await image(16, 16, 3).png().toBuffer()), undefined);
  assert.equal(readJpegHeader(Buffer.from('not an image at all')), undefined);
  assert.equal(readJpegHeader(Buffer.alloc(0)), undefined);
  assert.equal(readJpegHeader(jpeg.subarray(0, 30)), undefined); // cut before the frame header
  // a broken EXIF block: orientation unknown (libvips decides), size still read
  const sof = jpeg.indexOf(Buffer.from([0xff, 0xc0]));
  const exif = jpeg.indexOf(Buffer.from('Exif\0\0'));
  assert.ok(exif > 0 && exif < sof);
  const broken = Buffer.from(jpeg);
  broken[exif + 6] = 0x58; // TIFF byte order mark "XI": neither II nor MM
  assert.deepEqual([readJpegHeader(broken)?.width, readJpegHeader(broken)?.orientation], [16, undefined]);
});

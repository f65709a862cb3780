/**
 * What `decode` needs to know about a JPEG before choosing how to decode it, read from its
 * markers (no pixel data touched): frame size, sample precision and component count, EXIF
 * orientation, and whether it carries an ICC profile.
 *
 * The fast decoder (libjpeg-turbo via TurboJPEG, decode-jpeg-turbo.ts) handles plain 8-bit
 * grayscale and YCbCr/RGB JPEGs; everything else (rotation tags, ICC colour management, CMYK,
 * 12-bit, unreadable headers) goes to libvips, which applies it as before. So this parser only
 * has to be right about "plain", and answers undefined when in doubt.
 */

export interface JpegHeader {
  width: number;
  height: number;
  /** Bits per sample: 8 for almost all JPEGs, 12 (or 16 lossless) for a few medical/raw ones. */
  precision: number;
  /** 1: grayscale, 3: YCbCr (or RGB), 4: CMYK or YCCK. */
  components: number;
  /** EXIF orientation tag 1..8; 1 when there is none; undefined when an EXIF block could not be read. */
  orientation: number | undefined;
  /** An APP2 ICC_PROFILE segment is present (libvips converts such images to sRGB). */
  hasIccProfile: boolean;
}

/** Start-of-frame markers: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). */
function isStartOfFrame(marker: number): boolean {
  return marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
}

/** Segment marker bytes that stand alone (no length field): TEM, RST0-7, SOI, EOI. */
function isStandalone(marker: number): boolean {
  return marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9);
}

/**
 * The header of a JPEG, or undefined if `bytes` do not start like one or its markers cannot be
 * followed up to the frame header (the caller then lets libvips decide what the bytes are).
 */
export function readJpegHeader(bytes: Uint8Array): JpegHeader | undefined {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return undefined;
  let orientation: number | undefined = 1;
  let exifSeen = false;
  let hasIccProfile = false;
  let p = 2;
  while (p + 4 <= bytes.length) {
    if (bytes[p] !== 0xff) return undefined; // not at a marker: corrupt (libvips will say so)
    const marker = bytes[p + 1];
    if (marker === 0xff) {
      p += 1;
      continue;
    } // fill byte
    if (isStandalone(marker)) {
      p += 2;
      continue;
    }
    const length = (bytes[p + 2] << 8) | bytes[p + 3]; // includes the two length bytes
    const body = p + 4;
    const end = p + 2 + length;
    if (length < 2 || end > bytes.length) return undefined;
    if (isStartOfFrame(marker)) {
      if (length < 8) return undefined;
      const precision = bytes[body];
      const height = (bytes[body + 1] << 8) | bytes[body + 2];
      const width = (bytes[body + 3] << 8) | bytes[body + 4];
      const components = bytes[body + 5];
      if (width === 0 || height === 0) return undefined; // height from a DNL marker: rare, leave it to libvips
      return { width, height, precision, components, orientation, hasIccProfile };
    }
    if (marker === 0xe1 && !exifSeen && isAscii(bytes, body, 'Exif\0\0')) {
      exifSeen = true;
      orientation = exifOrientation(bytes, body + 6, end);
    }
    if (marker === 0xe2 && isAscii(bytes, body, 'ICC_PROFILE\0')) hasIccProfile = true;
    if (marker === 0xda) return undefined; // scan data before any frame header: corrupt
    p = end;
  }
  return undefined;
}

function isAscii(bytes: Uint8Array, at: number, text: string): boolean {
  if (at + text.length > bytes.length) return false;
  for (let i = 0; i < text.length; i++) if (bytes[at + i] !== text.charCodeAt(i)) return false;
  return true;
}

/**
 * The orientation tag (0x0112) of IFD0 of the TIFF structure at [tiff, end) (an APP1 Exif
 * segment after its "Exif\0\0"): 1 when the tag is absent, undefined when unreadable.
 */
function exifOrientation(bytes: Uint8Array, tiff: number, end: number): number | undefined {
  if (tiff + 8 > end) return undefined;
  const little = bytes[tiff] === 0x49 && bytes[tiff + 1] === 0x49; // "II"
  if (!little && !(bytes[tiff] === 0x4d && bytes[tiff + 1] === 0x4d)) return undefined; // "MM"
  const u16 = (at: number) => (little ? bytes[at] | (bytes[at + 1] << 8) : (bytes[at] << 8) | bytes[at + 1]);
  const u32 = (at: number) => (little ? u16(at) + u16(at + 2) * 65536 : u16(at) * 65536 + u16(at + 2));
  const ifd = tiff + u32(tiff + 4);
  if (ifd + 2 > end) return undefined;
  const entries = u16(ifd);
  for (let i = 0; i < entries; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > end) return undefined;
    if (u16(entry) === 0x0112) {
      const value = u16(entry + 8); // SHORT, stored left-justified in the value field
      return value >= 1 && value <= 8 ? value : undefined;
    }
  }
  return 1;
}

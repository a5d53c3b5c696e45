// The label mask in the browser: one byte per pixel (the class value, 0 =
// background), painted by the brush and eraser (which return the box they changed),
// shown in coloured canvases (`paint`: a box of it, at full resolution or in blocks
// for big images), and sent to the server as an 8-bit grey PNG (whole, or a box).
// The server stores label values, so the PNG is encoded here byte-exactly
// (canvas.toBlob would write RGBA and may colour-manage it); zlib comes from the
// browser's CompressionStream('deflate').
// Undo of a stroke is copy-on-write by tiles (beginUndo/endUndo/restore): the first write
// into a 256 x 256 tile during a stroke keeps that tile's old bytes, so an undo step costs
// what the stroke touched (a few tiles), not a copy of a slide's 144 MB mask.

/** Side of the tiles whose old bytes an undo record keeps (a power of two). */
export const UNDO_TILE = 256;
const TILE_SHIFT = Math.log2(UNDO_TILE);

/**
 * What one edit changed, to undo it (LabelMask.endUndo): the old bytes of each tile it
 * wrote into, and the box of the pixels it changed.
 */
export interface MaskUndo {
  /** Tile index (tile row * tiles across + tile column) -> the tile's bytes before the
   * edit, row by row over the tile's width (clipped at the mask's edge); null when the
   * tile was all background (nothing to keep: a fresh mask costs no memory). */
  readonly tiles: Map<number, Uint8Array | null>;
  /** The box of the pixels the edit changed (inside the saved tiles). */
  readonly changed: Rect;
}

/** The undo record being filled: `saved[t]` marks tile t as kept already. */
interface OpenUndo {
  tiles: Map<number, Uint8Array | null>;
  saved: Uint8Array;
  changed: Rect | null;
}

export class LabelMask {
  readonly width: number;
  readonly height: number;
  data: Uint8Array;
  private undoing: OpenUndo | null = null;

  constructor(width: number, height: number, data?: Uint8Array) {
    this.width = width;
    this.height = height;
    this.data = data ?? new Uint8Array(width * height);
  }

  /** A copy of the whole mask (for whole-mask replacements, which are rare and explicit). */
  snapshot(): Uint8Array {
    return this.data.slice();
  }

  private get tilesAcross(): number {
    return Math.ceil(this.width / UNDO_TILE);
  }

  /** Start recording the old bytes of what the next writes change (an open record is dropped). */
  beginUndo(): void {
    const tiles = this.tilesAcross * Math.ceil(this.height / UNDO_TILE);
    this.undoing = { tiles: new Map(), saved: new Uint8Array(tiles), changed: null };
  }

  /** Stop recording; the record of what changed since beginUndo, or null when nothing did. */
  endUndo(): MaskUndo | null {
    const u = this.undoing;
    this.undoing = null;
    return u && u.changed ? { tiles: u.tiles, changed: u.changed } : null;
  }

  /**
   * Put back what `record` saved, over the box it changed, and return that box (to repaint
   * and to save). Records must be restored newest first, as an undo stack does: pixels of
   * a saved tile that the edit left alone are then the same as the saved ones.
   */
  restore(record: MaskUndo): Rect {
    const box = record.changed;
    const across = this.tilesAcross;
    for (const [t, old] of record.tiles) {
      const tx = (t % across) * UNDO_TILE;
      const ty = Math.floor(t / across) * UNDO_TILE;
      const tw = Math.min(UNDO_TILE, this.width - tx);
      const x0 = Math.max(tx, box.x);
      const x1 = Math.min(tx + tw, box.x + box.width);
      const y0 = Math.max(ty, box.y);
      const y1 = Math.min(ty + UNDO_TILE, this.height, box.y + box.height);
      if (x1 <= x0) continue;
      for (let row = y0; row < y1; row++) {
        const k = row * this.width;
        if (old) {
          const src = (row - ty) * tw - tx;
          this.data.set(old.subarray(src + x0, src + x1), k + x0);
        } else this.data.fill(0, k + x0, k + x1);
      }
    }
    return { ...box };
  }

  /** Keep tile `t`'s bytes in the open record before its first write. */
  private saveTile(u: OpenUndo, t: number): void {
    u.saved[t] = 1;
    const across = this.tilesAcross;
    const tx = (t % across) * UNDO_TILE;
    const ty = Math.floor(t / across) * UNDO_TILE;
    const tw = Math.min(UNDO_TILE, this.width - tx);
    const th = Math.min(UNDO_TILE, this.height - ty);
    const old = new Uint8Array(tw * th);
    let any = false;
    for (let row = 0; row < th; row++) {
      const k = (ty + row) * this.width + tx;
      const src = this.data.subarray(k, k + tw);
      old.set(src, row * tw);
      if (!any) any = src.some((v) => v !== 0);
    }
    u.tiles.set(t, any ? old : null);
  }

  /** Label a disk of `radius` px around (x, y) with `value`; returns the changed pixels' box (null: none). */
  disk(x: number, y: number, radius: number, value: number): Rect | null {
    const r = Math.max(0.5, radius);
    const x0 = Math.max(0, Math.floor(x - r));
    const x1 = Math.min(this.width - 1, Math.ceil(x + r));
    const y0 = Math.max(0, Math.floor(y - r));
    const y1 = Math.min(this.height - 1, Math.ceil(y + r));
    let cx0 = Infinity;
    let cy0 = Infinity;
    let cx1 = -1;
    let cy1 = -1;
    const u = this.undoing;
    const across = this.tilesAcross;
    for (let row = y0; row <= y1; row++) {
      for (let col = x0; col <= x1; col++) {
        const dx = col + 0.5 - x;
        const dy = row + 0.5 - y;
        if (dx * dx + dy * dy > r * r) continue;
        const k = row * this.width + col;
        if (this.data[k] !== value) {
          if (u) {
            const t = (row >> TILE_SHIFT) * across + (col >> TILE_SHIFT);
            if (!u.saved[t]) this.saveTile(u, t);
          }
          this.data[k] = value;
          if (col < cx0) cx0 = col;
          if (col > cx1) cx1 = col;
          if (row < cy0) cy0 = row;
          cy1 = row;
        }
      }
    }
    if (cx1 < 0) return null;
    const changed = { x: cx0, y: cy0, width: cx1 - cx0 + 1, height: cy1 - cy0 + 1 };
    if (u) u.changed = union(u.changed, changed);
    return changed;
  }

  /** Label the stroke from (ax, ay) to (bx, by), `radius` px wide on each side; returns the changed box. */
  line(ax: number, ay: number, bx: number, by: number, radius: number, value: number): Rect | null {
    const steps = Math.max(1, Math.ceil(Math.hypot(bx - ax, by - ay) / Math.max(0.5, radius / 2)));
    let changed: Rect | null = null;
    for (let i = 0; i <= steps; i++) {
      const t = i / steps;
      changed = union(changed, this.disk(ax + (bx - ax) * t, ay + (by - ay) * t, radius, value));
    }
    return changed;
  }

  /** How many pixels carry a class (value > 0). */
  labelled(): number {
    let n = 0;
    for (let k = 0; k < this.data.length; k++) if (this.data[k]) n++;
    return n;
  }

  /** The pixels of `rect` (inside the mask) as a mask of their own (to send only an edited region). */
  crop(rect: Rect): LabelMask {
    const out = new LabelMask(rect.width, rect.height);
    for (let row = 0; row < rect.height; row++) {
      const k = (rect.y + row) * this.width + rect.x;
      out.data.set(this.data.subarray(k, k + rect.width), row * rect.width);
    }
    return out;
  }

  /** The whole mask as a rectangle. */
  bounds(): Rect {
    return { x: 0, y: 0, width: this.width, height: this.height };
  }

  /**
   * Repaint the part of `canvas` (showing `raster`) that covers `rect` (image pixels).
   * With `raster.factor` f > 1 a canvas pixel shows an f x f block: the block's largest
   * class value (cheap, and a thin stroke of a class stays visible when zoomed out).
   */
  paint(canvas: HTMLCanvasElement, raster: Raster, colors: Colors, rect: Rect, alpha = 140): void {
    const f = raster.factor;
    const c0 = Math.max(0, Math.floor((rect.x - raster.x) / f));
    const r0 = Math.max(0, Math.floor((rect.y - raster.y) / f));
    const c1 = Math.min(raster.width, Math.ceil((rect.x + rect.width - raster.x) / f));
    const r1 = Math.min(raster.height, Math.ceil((rect.y + rect.height - raster.y) / f));
    if (c1 <= c0 || r1 <= r0) return;
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    const w = c1 - c0;
    const img = ctx.createImageData(w, r1 - r0);
    const px = img.data;
    const lut = colorTable(colors, alpha);
    if (f === 1) {
      // One image pixel per canvas pixel: a plain copy (the common, hot case).
      for (let r = r0; r < r1; r++) {
        const src = (raster.y + r) * this.width + raster.x;
        for (let c = c0; c < c1; c++) {
          const v = this.data[src + c];
          if (!v) continue;
          const o = ((r - r0) * w + (c - c0)) * 4;
          px[o] = lut[v * 4];
          px[o + 1] = lut[v * 4 + 1];
          px[o + 2] = lut[v * 4 + 2];
          px[o + 3] = lut[v * 4 + 3];
        }
      }
      ctx.putImageData(img, c0, r0);
      return;
    }
    for (let r = r0; r < r1; r++) {
      const y0 = raster.y + r * f;
      const y1 = Math.min(this.height, y0 + f);
      for (let c = c0; c < c1; c++) {
        const x0 = raster.x + c * f;
        const x1 = Math.min(this.width, x0 + f);
        let v = 0;
        for (let y = y0; y < y1; y++) {
          const base = y * this.width;
          for (let x = x0; x < x1; x++) if (this.data[base + x] > v) v = this.data[base + x];
        }
        if (!v) continue;
        const o = ((r - r0) * w + (c - c0)) * 4;
        px[o] = lut[v * 4];
        px[o + 1] = lut[v * 4 + 1];
        px[o + 2] = lut[v * 4 + 2];
        px[o + 3] = lut[v * 4 + 3];
      }
    }
    ctx.putImageData(img, c0, r0);
  }
}

export type Colors = Map<number, [number, number, number]>;

/** A rectangle of image pixels (x = column, y = row of its top-left pixel). */
export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * What a canvas shows: canvas pixel (c, r) is the `factor` x `factor` block of image
 * pixels starting at column x + c * factor, row y + r * factor; width/height are the
 * canvas's size in its own pixels.
 */
export interface Raster {
  x: number;
  y: number;
  factor: number;
  width: number;
  height: number;
}

/** The smallest rectangle holding both (either may be null). */
export function union(a: Rect | null, b: Rect | null): Rect | null {
  if (!a) return b;
  if (!b) return a;
  const x = Math.min(a.x, b.x);
  const y = Math.min(a.y, b.y);
  return {
    x,
    y,
    width: Math.max(a.x + a.width, b.x + b.width) - x,
    height: Math.max(a.y + a.height, b.y + b.height) - y,
  };
}

/** RGBA per label value 0..255 (value 0, background, stays transparent). */
function colorTable(colors: Colors, alpha: number): Uint8Array {
  const lut = new Uint8Array(256 * 4);
  for (let v = 1; v < 256; v++) {
    const c = colors.get(v) ?? [255, 255, 255];
    lut.set([c[0], c[1], c[2], alpha], v * 4);
  }
  return lut;
}

/** '#rrggbb' -> [r, g, b]. */
export function rgb(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex.trim());
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : [255, 255, 255];
}

/**
 * Read a label PNG (grey or RGB: the first channel is the value) into a mask of the given
 * size. The server's 8-bit grey PNGs are decoded here (no canvas: a big slide's mask
 * would need one of 576 MB); other PNGs go through a canvas.
 */
export async function decodeMask(blob: Blob, width: number, height: number): Promise<LabelMask> {
  const grey = await decodeGreyPng(new Uint8Array(await blob.arrayBuffer()), width, height);
  if (grey) return new LabelMask(width, height, grey);
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (!ctx) throw new Error('no 2-D canvas in this browser');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  const px = ctx.getImageData(0, 0, width, height).data;
  const data = new Uint8Array(width * height);
  for (let k = 0; k < data.length; k++) data[k] = px[k * 4];
  return new LabelMask(width, height, data);
}

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** The pixels of a non-interlaced 8-bit greyscale `width` x `height` PNG; null for any other PNG. */
async function decodeGreyPng(bytes: Uint8Array, width: number, height: number): Promise<Uint8Array | null> {
  if (bytes.length < 33 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const idat: Uint8Array[] = [];
  for (let at = 8; at + 8 <= bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === 'IHDR') {
      const [depth, colour, , , interlace] = body.subarray(8, 13);
      if (view.getUint32(at + 8) !== width || view.getUint32(at + 12) !== height) return null;
      if (depth !== 8 || colour !== 0 || interlace !== 0) return null;
    } else if (type === 'IDAT') idat.push(body);
    else if (type === 'IEND') break;
    at += 12 + length;
  }
  if (!idat.length) return null;
  const stream = new Blob(idat as BlobPart[]).stream().pipeThrough(new DecompressionStream('deflate'));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  if (raw.length < (width + 1) * height) return null;
  const out = new Uint8Array(width * height);
  for (let row = 0; row < height; row++) {
    const filter = raw[row * (width + 1)];
    const src = row * (width + 1) + 1;
    const o = row * width;
    const up = o - width; // the previous row, already unfiltered (none on row 0)
    for (let col = 0; col < width; col++) {
      const a = col > 0 ? out[o + col - 1] : 0;
      const b = row > 0 ? out[up + col] : 0;
      const c = col > 0 && row > 0 ? out[up + col - 1] : 0;
      let pred = 0;
      if (filter === 1) pred = a;
      else if (filter === 2) pred = b;
      else if (filter === 3) pred = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) return null;
      out[o + col] = (raw[src + col] + pred) & 0xff;
    }
  }
  return out;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}

async function zlib(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The mask as an 8-bit greyscale PNG of label values (filter 0 on every row). */
export async function encodeMask(mask: LabelMask): Promise<Blob> {
  const { width, height, data } = mask;
  const raw = new Uint8Array((width + 1) * height);
  for (let row = 0; row < height; row++) raw.set(data.subarray(row * width, (row + 1) * width), row * (width + 1) + 1);
  const header = new Uint8Array(13);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8); // bit depth 8, colour type 0 (grey), deflate, filter, no interlace
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  const parts = [signature, chunk('IHDR', header), chunk('IDAT', await zlib(raw)), chunk('IEND', new Uint8Array(0))];
  return new Blob(parts as BlobPart[], { type: 'image/png' });
}

// The label mask in the browser: one byte per pixel (the class value, 0 =
// background), painted by the brush and eraser, shown as a coloured canvas, and
// sent to the server as an 8-bit grey PNG. The server stores label values, so
// the PNG is encoded here byte-exactly (canvas.toBlob would write RGBA and may
// colour-manage it); zlib comes from the browser's CompressionStream('deflate').

export class LabelMask {
  readonly width: number;
  readonly height: number;
  data: Uint8Array;

  constructor(width: number, height: number, data?: Uint8Array) {
    this.width = width;
    this.height = height;
    this.data = data ?? new Uint8Array(width * height);
  }

  snapshot(): Uint8Array {
    return this.data.slice();
  }

  /** Label a disk of `radius` px around (x, y) with `value`; returns whether a pixel changed. */
  disk(x: number, y: number, radius: number, value: number): boolean {
    const r = Math.max(0.5, radius);
    const x0 = Math.max(0, Math.floor(x - r));
    const x1 = Math.min(this.width - 1, Math.ceil(x + r));
    const y0 = Math.max(0, Math.floor(y - r));
    const y1 = Math.min(this.height - 1, Math.ceil(y + r));
    let changed = false;
    for (let row = y0; row <= y1; row++) {
      for (let col = x0; col <= x1; col++) {
        const dx = col + 0.5 - x;
        const dy = row + 0.5 - y;
        if (dx * dx + dy * dy > r * r) continue;
        const k = row * this.width + col;
        if (this.data[k] !== value) {
          this.data[k] = value;
          changed = true;
        }
      }
    }
    return changed;
  }

  /** Label the stroke from (ax, ay) to (bx, by), `radius` px wide on each side. */
  line(ax: number, ay: number, bx: number, by: number, radius: number, value: number): boolean {
    const steps = Math.max(1, Math.ceil(Math.hypot(bx - ax, by - ay) / Math.max(0.5, radius / 2)));
    let changed = false;
    for (let i = 0; i <= steps; i++) {
      const t = i / steps;
      changed = this.disk(ax + (bx - ax) * t, ay + (by - ay) * t, radius, value) || changed;
    }
    return changed;
  }

  /** How many pixels carry a class (value > 0). */
  labelled(): number {
    let n = 0;
    for (let k = 0; k < this.data.length; k++) if (this.data[k]) n++;
    return n;
  }

  /** Paint the mask into `canvas` (sized to the image) in the classes' colours. */
  draw(canvas: HTMLCanvasElement, colors: Map<number, [number, number, number]>, alpha = 140): void {
    canvas.width = this.width;
    canvas.height = this.height;
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    const img = ctx.createImageData(this.width, this.height);
    const px = img.data;
    for (let k = 0; k < this.data.length; k++) {
      const v = this.data[k];
      if (!v) continue;
      const c = colors.get(v) ?? [255, 255, 255];
      const o = k * 4;
      px[o] = c[0];
      px[o + 1] = c[1];
      px[o + 2] = c[2];
      px[o + 3] = alpha;
    }
    ctx.putImageData(img, 0, 0);
  }
}

/** '#rrggbb' -> [r, g, b]. */
export function rgb(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex.trim());
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : [255, 255, 255];
}

/** Read a label PNG (grey or RGB: the first channel is the value) into a mask of the given size. */
export async function decodeMask(blob: Blob, width: number, height: number): Promise<LabelMask> {
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

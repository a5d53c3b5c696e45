// The map's scatter without the DOM: points in typed arrays, a view transform,
// drawing with one path per colour (100k points stay interactive: a path of
// rectangles per colour is a few fills, not 100k), picking and lasso tests.

export interface View {
  /** Pixels per map unit. */
  scale: number;
  /** Screen position of map (0, 0). */
  tx: number;
  ty: number;
}

export class Scatter {
  readonly xs: Float32Array;
  readonly ys: Float32Array;
  /** Colour index of each point into `palette`. */
  colour: Uint16Array;
  palette: string[] = [];
  view: View = { scale: 1, tx: 0, ty: 0 };
  /** Points drawn larger (the hovered one). */
  highlight = -1;

  constructor(x: number[], y: number[]) {
    this.xs = Float32Array.from(x);
    this.ys = Float32Array.from(y);
    this.colour = new Uint16Array(x.length);
  }

  get size(): number {
    return this.xs.length;
  }

  /** Fit the whole map into a w x h canvas with a margin. */
  fit(w: number, h: number): void {
    const scale = (Math.min(w, h) / 2) * 0.92; // coordinates are in [-1, 1]
    this.view = { scale, tx: w / 2, ty: h / 2 };
  }

  zoomAt(px: number, py: number, factor: number): void {
    const v = this.view;
    const scale = Math.min(Math.max(v.scale * factor, 20), 1e6);
    const f = scale / v.scale;
    this.view = { scale, tx: px - (px - v.tx) * f, ty: py - (py - v.ty) * f };
  }

  pan(dx: number, dy: number): void {
    this.view = { ...this.view, tx: this.view.tx + dx, ty: this.view.ty + dy };
  }

  toScreen(i: number): [number, number] {
    const v = this.view;
    return [v.tx + this.xs[i] * v.scale, v.ty - this.ys[i] * v.scale];
  }

  draw(ctx: CanvasRenderingContext2D, w: number, h: number, dot: number): void {
    ctx.clearRect(0, 0, w, h);
    const { scale, tx, ty } = this.view;
    const half = dot / 2;
    // Group by colour once per draw: one path and one fill per colour.
    const groups: number[][] = this.palette.map(() => []);
    for (let i = 0; i < this.xs.length; i++) {
      const c = this.colour[i];
      if (c < groups.length) groups[c].push(i);
    }
    for (let c = 0; c < groups.length; c++) {
      const idx = groups[c];
      if (!idx.length) continue;
      ctx.fillStyle = this.palette[c];
      ctx.beginPath();
      for (const i of idx) {
        const px = tx + this.xs[i] * scale;
        const py = ty - this.ys[i] * scale;
        if (px < -dot || py < -dot || px > w + dot || py > h + dot) continue;
        ctx.rect(px - half, py - half, dot, dot);
      }
      ctx.fill();
    }
    if (this.highlight >= 0 && this.highlight < this.size) {
      const [px, py] = this.toScreen(this.highlight);
      ctx.strokeStyle = '#111';
      ctx.lineWidth = 2;
      ctx.strokeRect(px - dot - 2, py - dot - 2, 2 * dot + 4, 2 * dot + 4);
    }
  }

  /** The point nearest to a screen position within `radius` pixels, or -1. */
  pick(px: number, py: number, radius = 8): number {
    const { scale, tx, ty } = this.view;
    let best = -1;
    let bestD = radius * radius;
    for (let i = 0; i < this.xs.length; i++) {
      const dx = tx + this.xs[i] * scale - px;
      const dy = ty - this.ys[i] * scale - py;
      const d = dx * dx + dy * dy;
      if (d <= bestD) {
        bestD = d;
        best = i;
      }
    }
    return best;
  }

  /** Indices of the points inside a screen-space polygon (even-odd rule). */
  lasso(poly: [number, number][]): number[] {
    if (poly.length < 3) return [];
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -Infinity;
    let y1 = -Infinity;
    for (const [x, y] of poly) {
      x0 = Math.min(x0, x);
      y0 = Math.min(y0, y);
      x1 = Math.max(x1, x);
      y1 = Math.max(y1, y);
    }
    const out: number[] = [];
    const { scale, tx, ty } = this.view;
    for (let i = 0; i < this.xs.length; i++) {
      const px = tx + this.xs[i] * scale;
      const py = ty - this.ys[i] * scale;
      if (px < x0 || px > x1 || py < y0 || py > y1) continue;
      if (inside(px, py, poly)) out.push(i);
    }
    return out;
  }
}

function inside(x: number, y: number, poly: [number, number][]): boolean {
  let yes = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i];
    const [xj, yj] = poly[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) yes = !yes;
  }
  return yes;
}

/** Five steps from calm to alarming, for uncertainty. */
export const RAMP = ['#2b83ba', '#abdda4', '#e6d96a', '#fdae61', '#d7191c'];

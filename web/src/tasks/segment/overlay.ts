// Where the label mask of a big image is drawn. One canvas of a 12,000 x 12,000 slide
// would be 576 MB of RGBA and over browsers' canvas limits, so a big image's mask is
// an overview canvas (each pixel an f x f block, long side <= OVERLAY_MAX) plus, once
// zoomed in far enough, a full-resolution canvas of the visible part only. Both are
// placed in image pixels inside the editor's world, like the DeepZoom tiles.
import type { Raster, Rect } from './mask';
import { isBig, type View } from './tiles';

/** Longest side of the overview canvas, and of the full-resolution detail canvas. */
export const OVERLAY_MAX = 4096;
/** Extra image pixels the detail canvas covers around the view, so short pans need no redraw. */
const DETAIL_MARGIN = 512;

/** The canvas of the whole mask: full resolution for normal images, f x f blocks for big ones. */
export function overviewRaster(width: number, height: number): Raster {
  const factor = isBig(width, height) ? Math.ceil(Math.max(width, height) / OVERLAY_MAX) : 1;
  return { x: 0, y: 0, factor, width: Math.ceil(width / factor), height: Math.ceil(height / factor) };
}

/** The image pixels the view shows (whole pixels, clipped to the image); null when none. */
export function visibleRect(width: number, height: number, view: View): Rect | null {
  if (!(view.scale > 0)) return null;
  const x0 = Math.max(0, Math.floor(-view.tx / view.scale));
  const y0 = Math.max(0, Math.floor(-view.ty / view.scale));
  const x1 = Math.min(width, Math.ceil((view.stageWidth - view.tx) / view.scale));
  const y1 = Math.min(height, Math.ceil((view.stageHeight - view.ty) / view.scale));
  return x1 > x0 && y1 > y0 ? { x: x0, y: y0, width: x1 - x0, height: y1 - y0 } : null;
}

const contains = (outer: Rect, inner: Rect): boolean =>
  inner.x >= outer.x &&
  inner.y >= outer.y &&
  inner.x + inner.width <= outer.x + outer.width &&
  inner.y + inner.height <= outer.y + outer.height;

/**
 * The full-resolution canvas over the visible part of a big image (plus a margin, at
 * most OVERLAY_MAX px a side), or null for a normal image or while the view shows more
 * than OVERLAY_MAX px a side. `current` is kept while it still covers the view, so a
 * pan within the margin redraws nothing.
 */
export function detailRaster(width: number, height: number, view: View, current: Raster | null): Raster | null {
  if (!isBig(width, height)) return null;
  const vis = visibleRect(width, height, view);
  if (!vis || vis.width > OVERLAY_MAX || vis.height > OVERLAY_MAX) return null;
  if (current && contains(current, vis)) return current;
  const mx = Math.min(DETAIL_MARGIN, Math.floor((OVERLAY_MAX - vis.width) / 2));
  const my = Math.min(DETAIL_MARGIN, Math.floor((OVERLAY_MAX - vis.height) / 2));
  const x0 = Math.max(0, vis.x - mx);
  const y0 = Math.max(0, vis.y - my);
  const x1 = Math.min(width, vis.x + vis.width + mx);
  const y1 = Math.min(height, vis.y + vis.height + my);
  return { x: x0, y: y0, factor: 1, width: x1 - x0, height: y1 - y0 };
}

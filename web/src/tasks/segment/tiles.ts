// Big images in the segment editor: a downscaled preview (GET .../segment/items/{id}/preview.jpg)
// stretched over the whole image, plus, once the view zooms in past the preview's
// resolution, the DeepZoom tiles of the score viewer (GET .../items/{id}/tiles/{level}/{col}_{row}.jpeg)
// that cover the visible part. Everything is placed in image pixels inside the editor's
// world, so heatmap, mask and labels stay aligned with it.

/** Images with more pixels are "big" (as services/segments/files.py BIG_PIXELS). */
export const BIG_PIXELS = 4096 * 4096;
/** Long side of the preview image the editor loads for big or non-browser images. */
export const PREVIEW_SIZE = 2048;
const TILE = 254; // media/tiles.py TILE_SIZE
const OVERLAP = 1; // media/tiles.py OVERLAP
const MAX_TILES = 400;

export interface View {
  scale: number; // screen px per image px
  tx: number; // screen offset of the image origin
  ty: number;
  stageWidth: number;
  stageHeight: number;
}

export interface PlacedTile {
  key: string;
  url: string;
  left: number; // image pixels
  top: number;
  width: number;
  height: number;
}

export const isBig = (width: number, height: number): boolean => width * height > BIG_PIXELS;

/**
 * The DeepZoom tiles that cover the visible part of a `width` x `height` image, on the
 * coarsest level that still has at least one level pixel per two screen pixels; none
 * while the preview is sharp enough (or the view is empty).
 */
export function visibleTiles(projectId: number, itemId: number, width: number, height: number, view: View): PlacedTile[] {
  const longest = Math.max(width, height);
  if (!longest || !(view.scale > 0) || view.scale * longest <= PREVIEW_SIZE) return [];
  const maxLevel = Math.ceil(Math.log2(longest));
  const down = Math.max(0, Math.floor(Math.log2(1 / view.scale)));
  const level = Math.max(0, maxLevel - down);
  const f = 2 ** (maxLevel - level); // image pixels per level pixel
  const lw = Math.ceil(width / f);
  const lh = Math.ceil(height / f);
  const x0 = Math.max(0, -view.tx / view.scale);
  const y0 = Math.max(0, -view.ty / view.scale);
  const x1 = Math.min(width, (view.stageWidth - view.tx) / view.scale);
  const y1 = Math.min(height, (view.stageHeight - view.ty) / view.scale);
  if (x1 <= x0 || y1 <= y0) return [];
  const c0 = Math.floor(x0 / f / TILE);
  const r0 = Math.floor(y0 / f / TILE);
  const c1 = Math.min(Math.ceil(lw / TILE) - 1, Math.floor(x1 / f / TILE));
  const r1 = Math.min(Math.ceil(lh / TILE) - 1, Math.floor(y1 / f / TILE));
  if ((c1 - c0 + 1) * (r1 - r0 + 1) > MAX_TILES) return [];
  const base = `/api/projects/${Number(projectId)}/items/${Number(itemId)}/tiles/${level}`;
  const out: PlacedTile[] = [];
  for (let r = r0; r <= r1; r++) {
    for (let c = c0; c <= c1; c++) {
      const px0 = Math.max(0, c * TILE - OVERLAP);
      const py0 = Math.max(0, r * TILE - OVERLAP);
      const px1 = Math.min(lw, (c + 1) * TILE + OVERLAP);
      const py1 = Math.min(lh, (r + 1) * TILE + OVERLAP);
      const left = px0 * f;
      const top = py0 * f;
      out.push({
        key: `${level}/${c}_${r}`,
        url: `${base}/${c}_${r}.jpeg`,
        left,
        top,
        width: Math.min(px1 * f, width) - left,
        height: Math.min(py1 * f, height) - top,
      });
    }
  }
  return out;
}

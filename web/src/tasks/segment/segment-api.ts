// The 2-D segmentation endpoints (src/loupe/api/routes/segment.py), all under
// /api/projects/{id}/segment. Masks and heatmaps are PNG, so every call goes
// through `send`; the JSON answers are typed here from the segmentation API
// contract until the routes are in the generated OpenAPI types (then replace
// these interfaces with Schemas[...]).
import { fillPath, send, type Job } from '../../lib/api';

export type PointSource = 'human' | 'extracted';

/** One click, in image pixels (x = column, y = row) with the class value (0 = background). */
export interface SegPoint {
  x: number;
  y: number;
  value: number;
  source: PointSource;
}

/** A stroke: its pixels are labelled `value` within `width` px of the polyline. */
export interface SegScribble {
  value: number;
  width: number;
  path: [number, number][];
}

export interface SegAnnotation {
  item_id: number;
  version: number;
  width: number;
  height: number;
  points: SegPoint[];
  scribbles: SegScribble[];
  has_mask: boolean;
  origin: 'human' | 'model_accepted' | null;
}

export interface ExtractOptions {
  max_points?: number;
  confidence_threshold?: number;
  min_distance?: number;
  gradient_weight?: number;
}

export interface SegStatus {
  job: Job | null;
  last_version: Record<string, unknown> | null;
  settings: Record<string, unknown>;
}

/** What a running training publishes in job.result (and the final job's result). */
export interface TrainProgress {
  epoch?: number;
  loss?: number;
  val_dice?: number | Record<string, number>;
  heatmap_rev?: number;
}

export type HeatmapLayer = 'probability' | 'uncertainty';

const base = (projectId: number) => fillPath('/api/projects/{project_id}/segment', { project_id: projectId });
const itemBase = (projectId: number, itemId: number) => `${base(projectId)}/items/${Number(itemId)}`;

async function json<T>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

export async function getAnnotation(projectId: number, itemId: number): Promise<SegAnnotation> {
  return json(await send('GET', `${itemBase(projectId, itemId)}/annotation`));
}

export async function putAnnotation(
  projectId: number,
  itemId: number,
  body: { version: number; points: SegPoint[]; scribbles: SegScribble[] },
): Promise<SegAnnotation> {
  return json(await send('PUT', `${itemBase(projectId, itemId)}/annotation`, { json: body }));
}

/** Save an edited label mask (8-bit PNG of class values, the image's size). */
export async function putMask(projectId: number, itemId: number, version: number, png: Blob): Promise<SegAnnotation> {
  const url = `${itemBase(projectId, itemId)}/mask?version=${Number(version)}`;
  // fetch sends a Blob's own type as the Content-Type (image/png from canvas.toBlob).
  const body = png.type === 'image/png' ? png : new Blob([png], { type: 'image/png' });
  return json(await send('PUT', url, { body }));
}

/** Save a box of an edited mask: `png` holds its label values, pasted at (rect.x, rect.y). */
export async function putMaskRegion(
  projectId: number,
  itemId: number,
  version: number,
  rect: { x: number; y: number },
  png: Blob,
): Promise<SegAnnotation> {
  const query = `x=${Number(rect.x)}&y=${Number(rect.y)}&version=${Number(version)}`;
  const url = `${itemBase(projectId, itemId)}/mask/region?${query}`;
  const body = png.type === 'image/png' ? png : new Blob([png], { type: 'image/png' });
  return json(await send('PUT', url, { body }));
}

export const maskUrl = (projectId: number, itemId: number, rev: number): string =>
  `${itemBase(projectId, itemId)}/mask.png?rev=${rev}`;

/** The image as a JPEG at most `maxSize` px on its long side (big or non-browser images). */
export const previewUrl = (projectId: number, itemId: number, maxSize: number): string =>
  `${itemBase(projectId, itemId)}/preview.jpg?max_size=${Number(maxSize)}`;

export const heatmapUrl = (projectId: number, itemId: number, layer: HeatmapLayer, value: number, rev: number): string =>
  `${itemBase(projectId, itemId)}/heatmap.png?layer=${layer}&value=${value}&max_size=1024&rev=${rev}`;

export async function extractPoints(projectId: number, itemId: number, opts: ExtractOptions = {}): Promise<SegAnnotation> {
  return json(await send('POST', `${itemBase(projectId, itemId)}/extract-points`, { json: opts }));
}

export async function acceptMask(projectId: number, itemId: number, threshold: number): Promise<SegAnnotation> {
  return json(await send('POST', `${itemBase(projectId, itemId)}/accept-mask`, { json: { threshold } }));
}

export async function train(projectId: number, itemId: number | null): Promise<Job> {
  return json(await send('POST', `${base(projectId)}/train`, { json: itemId === null ? {} : { item_id: itemId } }));
}

export async function stopJob(jobId: number): Promise<void> {
  await send('POST', fillPath('/api/jobs/{job_id}/cancel', { job_id: jobId }));
}

export async function status(projectId: number): Promise<SegStatus> {
  return json(await send('GET', `${base(projectId)}/status`));
}

/** The progress fields of a segment training job (from its result, else its message as JSON). */
export function progressOf(job: Job | null): TrainProgress {
  if (!job) return {};
  if (job.result && typeof job.result === 'object') return job.result as TrainProgress;
  try {
    const m = JSON.parse(job.message) as unknown;
    return m && typeof m === 'object' ? (m as TrainProgress) : {};
  } catch {
    return {};
  }
}

/** One number for a validation Dice given per class or overall. */
export function meanDice(d: TrainProgress['val_dice']): number | null {
  if (typeof d === 'number') return d;
  const v = Object.values(d ?? {}).filter((x) => typeof x === 'number');
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
}

// NiiVue helpers for the volume editor. NiiVue (≈300 KB gzip) is loaded with a
// dynamic import only when a volume opens, so the classify/score pages never pay for it.
import type { Niivue, NVImage } from '@niivue/niivue';
import type { Project } from '../../lib/api';

export type NiivueModule = typeof import('@niivue/niivue');

let loading: Promise<NiivueModule> | null = null;
/** The NiiVue module, fetched once on first use. */
export function loadNiivue(): Promise<NiivueModule> {
  loading ??= import('@niivue/niivue');
  return loading;
}

/** A voxel's array indices in the image as served: [x, y, z], x = first NIfTI axis. */
export type Voxel = [number, number, number];

export interface LabelClass {
  name: string;
  color: string;
  value: number;
}

/** The project's label classes (schema `classes` with `value` 1..255; 0 is background). */
export function labelClasses(project: Project): LabelClass[] {
  const raw = (project.schema as { classes?: { name: string; color?: string | null; value?: number | null }[] }).classes ?? [];
  return raw.map((c, i) => ({ name: c.name, color: c.color ?? '#e69f00', value: c.value ?? i + 1 }));
}

function rgb(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})/i.exec(hex);
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : [255, 0, 0];
}

/** A NiiVue label colormap: value 0 transparent, each class in its schema colour. */
export function drawColormap(classes: LabelClass[]) {
  const sorted = [...classes].sort((a, b) => a.value - b.value);
  const cols = sorted.map((c) => rgb(c.color));
  return {
    R: [0, ...cols.map((c) => c[0])],
    G: [0, ...cols.map((c) => c[1])],
    B: [0, ...cols.map((c) => c[2])],
    A: [0, ...cols.map(() => 255)],
    I: [0, ...sorted.map((c) => c.value)],
    labels: ['background', ...sorted.map((c) => c.name)],
  };
}

/**
 * Apply the schema colours to the drawing. NiiVue's setDrawColormap() takes a name
 * and re-uploads every volume (updateGLVolume: seconds at 256^3 on software GL);
 * the drawing's colours only need the colormap texture refreshed.
 */
export function setDrawColors(nv: Niivue, mod: NiivueModule, classes: LabelClass[]): void {
  const inner = nv as unknown as { drawLut: unknown; refreshColormaps: () => void };
  inner.drawLut = mod.cmapper.makeDrawLut(drawColormap(classes));
  inner.refreshColormaps();
  nv.drawScene();
}

export interface WindowPreset {
  key: string;
  name: string;
  /** Window width and level in the image's units (HU for CT); null: auto contrast. */
  width: number | null;
  level: number | null;
}

export const WINDOWS: WindowPreset[] = [
  { key: 'auto', name: 'Auto (MR)', width: null, level: null },
  { key: 'soft', name: 'CT soft tissue', width: 400, level: 40 },
  { key: 'lung', name: 'CT lung', width: 1500, level: -600 },
  { key: 'bone', name: 'CT bone', width: 1800, level: 400 },
];

/** Set the display range of the image: a W/L preset, or robust auto contrast (2nd-98th percentile). */
export function applyWindow(nv: Niivue, preset: WindowPreset): void {
  const vol = nv.volumes[0];
  if (!vol) return;
  if (preset.width === null || preset.level === null) {
    vol.cal_min = vol.robust_min ?? vol.global_min ?? vol.cal_min;
    vol.cal_max = vol.robust_max ?? vol.global_max ?? vol.cal_max;
  } else {
    vol.cal_min = preset.level - preset.width / 2;
    vol.cal_max = preset.level + preset.width / 2;
  }
  nv.updateGLVolume();
}

/**
 * Load gzip'd NIfTI bytes (a mask from the server) as the editable drawing: what
 * `loadDrawingFromUrl` does, from bytes already fetched (so the caller can read
 * headers such as X-Model-Version). Read from a File, not a blob: URL, which the
 * app's Content-Security-Policy (connect-src 'self') blocks.
 */
export async function loadDrawingBytes(mod: NiivueModule, nv: Niivue, bytes: ArrayBuffer): Promise<boolean> {
  const img: NVImage = await mod.NVImage.loadFromFile({ file: new File([bytes], 'mask.nii.gz'), name: 'mask.nii.gz' });
  nv.drawClearAllUndoBitmaps();
  return nv.loadDrawing(img);
}

/** The drawing as native-order voxel indices (x fastest), as the server's arrays are. */
export function nativeIndexOfRas(vol: NVImage): (rasIndex: number) => number {
  const step = vol.img2RASstep as number[];
  const start = vol.img2RASstart as number[];
  const d = vol.dimsRAS as number[];
  return (i) => {
    const rx = i % d[1];
    const ry = Math.floor(i / d[1]) % d[2];
    const rz = Math.floor(i / (d[1] * d[2]));
    return start[0] + rx * step[0] + start[1] + ry * step[1] + start[2] + rz * step[2];
  };
}

/** Voxels whose drawing value changed between two RAS bitmaps, as native [x, y, z] per new value. */
export function strokesBetween(vol: NVImage, before: Uint8Array, after: Uint8Array): Map<number, Voxel[]> {
  const toNative = nativeIndexOfRas(vol);
  const dims = vol.hdr!.dims;
  const out = new Map<number, Voxel[]>();
  for (let i = 0; i < after.length; i++) {
    if (after[i] === before[i]) continue;
    const n = toNative(i);
    const x = n % dims[1];
    const y = Math.floor(n / dims[1]) % dims[2];
    const z = Math.floor(n / (dims[1] * dims[2]));
    const v = after[i];
    let list = out.get(v);
    if (!list) out.set(v, (list = []));
    list.push([x, y, z] as Voxel);
  }
  return out;
}

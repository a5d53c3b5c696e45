// What the segmentation editor's tool bar controls, the project's classes as
// the editor uses them, and its keys (shown in the tool bar, handled by the editor).
import type { Item, Project } from '../../lib/api';
import type { ExtractOptions } from './segment-api';

export type Tool = 'point' | 'scribble' | 'brush' | 'eraser' | 'pan';

export interface ToolState {
  tool: Tool;
  /** The class value clicks, strokes and the brush write (0 = background). */
  value: number;
  /** Scribble, brush and eraser width in image pixels. */
  width: number;
  showHeatmap: boolean;
  layer: 'probability' | 'uncertainty';
  opacity: number;
  showMask: boolean;
  showLabels: boolean;
  /** Accept-as-mask threshold on the probability of the class. */
  threshold: number;
  /** Start a training after each save of new clicks (live training). */
  live: boolean;
  /** Point extraction parameters (filled from the project's settings). */
  extract: Required<ExtractOptions>;
}

export const EXTRACT_FIELDS: { key: keyof ExtractOptions; text: string; step: number; min: number; max: number }[] = [
  { key: 'max_points', text: 'Points per class', step: 50, min: 0, max: 5000 },
  { key: 'confidence_threshold', text: 'Confidence above', step: 0.05, min: 0.05, max: 1 },
  { key: 'min_distance', text: 'Min distance (px)', step: 1, min: 0, max: 1000 },
  { key: 'gradient_weight', text: 'Share near edges', step: 0.05, min: 0, max: 1 },
];

export interface SegClass {
  name: string;
  color: string;
  value: number;
}

export const BACKGROUND: SegClass = { name: 'background', color: '#e5484d', value: 0 };

/** The project's classes with their label values (the server fills missing values 1, 2, ... in order). */
export function segClasses(project: Project): SegClass[] {
  const raw = ((project.schema as { classes?: { name: string; color?: string | null; value?: number | null }[] })
    .classes ?? []) as { name: string; color?: string | null; value?: number | null }[];
  const used = new Set(raw.map((c) => c.value).filter((v): v is number => typeof v === 'number'));
  let next = 1;
  return raw.map((c) => {
    let value = c.value;
    if (typeof value !== 'number') {
      while (used.has(next)) next++;
      value = next;
      used.add(next);
    }
    return { name: c.name, color: c.color ?? '#00c853', value };
  });
}

export const TOOLS: { tool: Tool; key: string; text: string; hint: string }[] = [
  { tool: 'point', key: 'p', text: 'Points', hint: 'click to add a point; drag to pan' },
  { tool: 'scribble', key: 's', text: 'Scribble', hint: 'draw a stroke' },
  { tool: 'brush', key: 'm', text: 'Brush', hint: 'paint the mask' },
  { tool: 'eraser', key: 'e', text: 'Eraser', hint: 'remove points, strokes and mask pixels' },
  { tool: 'pan', key: 'h', text: 'Pan', hint: 'drag to move' },
];

export const KEY_HINTS: [string, string][] = [
  ['1–9', 'class by value'],
  ['0 / B', 'background'],
  ['P S M E H', 'tools'],
  ['[ ]', 'width'],
  ['Z', 'undo'],
  ['V', 'heatmap'],
  ['U', 'probability / uncertainty'],
  ['wheel', 'zoom'],
  ['right drag', 'pan'],
];

export type KeyCommand =
  | { value: number }
  | { tool: Tool }
  | { run: 'undo' | 'heatmap' | 'layer' | 'thinner' | 'wider' | 'fit' };

const RUN_KEYS: Record<string, 'undo' | 'heatmap' | 'layer' | 'thinner' | 'wider' | 'fit'> = {
  z: 'undo',
  v: 'heatmap',
  u: 'layer',
  '[': 'thinner',
  ']': 'wider',
  f: 'fit',
};

/** What a key does in the editor (null: not the editor's, e.g. typing in a field). */
export function keyCommand(e: KeyboardEvent, classes: SegClass[]): KeyCommand | null {
  // Letters typed into a field are the field's; checkboxes, sliders and buttons leave them to the editor.
  const t = e.target as HTMLElement | null;
  const typing = t instanceof HTMLInputElement ? !['checkbox', 'radio', 'range', 'button'].includes(t.type) : false;
  if (t && (typing || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return null;
  if (e.altKey || e.metaKey) return null;
  const k = e.key.toLowerCase();
  if (e.ctrlKey && k !== 'z') return null;
  if (k === '0' || k === 'b') return { value: 0 };
  if (/^[1-9]$/.test(k)) return classes.some((c) => c.value === Number(k)) ? { value: Number(k) } : null;
  if (Object.hasOwn(RUN_KEYS, k)) return { run: RUN_KEYS[k] };
  const tool = TOOLS.find((x) => x.key === k);
  return tool ? { tool: tool.tool } : null;
}

/** The image size from the item's shape (rows = Y, columns = X), for before the server answers. */
export function imageSize(item: Item): { width: number; height: number } {
  const axes = (item.axes ?? '').toUpperCase();
  const y = axes.indexOf('Y');
  const x = axes.indexOf('X');
  if (y >= 0 && x >= 0) return { width: item.shape[x], height: item.shape[y] };
  return { width: item.shape[1] ?? 0, height: item.shape[0] ?? 0 };
}

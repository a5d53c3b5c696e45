// The project's label schema (see services/project_schema.py), read from
// ProjectPublic.schema, which the OpenAPI types only know as an object.
import type { Item, Project } from './api';

export interface ClassDef {
  name: string;
  color: string;
  hotkey: string | null;
  description?: string;
}
export interface MetricDef {
  name: string;
  min: number;
  max: number;
  step: number;
  description?: string;
}

export const RESERVED = { unsure: '0', skip: 'x', undo: 'z' } as const;

export function classesOf(p: Project | null): ClassDef[] {
  return ((p?.schema as { classes?: ClassDef[] } | undefined)?.classes ?? []) as ClassDef[];
}
export function metricsOf(p: Project | null): MetricDef[] {
  return ((p?.schema as { metrics?: MetricDef[] } | undefined)?.metrics ?? []) as MetricDef[];
}

export type LabelValue =
  | { kind: 'class'; label: string }
  | { kind: 'unsure' }
  | { kind: 'skip' }
  | { kind: 'scores'; scores: Record<string, number> };

/** Text of an item's human label, e.g. 'lymphocyte', 'unsure', 'a 2 · b 1'. */
export function labelText(item: Item): string {
  const a = item.annotation;
  if (!a) return '';
  if (a.kind === 'class') return a.label ?? '';
  if (a.kind === 'scores' && a.scores) {
    return Object.entries(a.scores)
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(' · ');
  }
  return a.kind;
}

export function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  return Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/0+$/, '').replace(/\.$/, '');
}

export function pct(v: number | null | undefined): string {
  return v === null || v === undefined ? '' : `${Math.round(v * 100)}%`;
}

/** The draft's score for a metric: the model writes them to output.scores (or output). */
export function draftScore(item: Item, metric: string): number | null {
  const out = item.draft?.output as Record<string, unknown> | undefined;
  if (!out) return null;
  const scores = (out.scores ?? out) as Record<string, unknown>;
  const v = scores[metric];
  return typeof v === 'number' ? v : null;
}

const FLAG_TEXT: Record<string, string> = {
  novel: 'unlike the labelled images',
  disagreement: 'models disagree',
  low_confidence: 'low confidence',
  'low confidence': 'low confidence',
};
export function flagText(reason: string | null | undefined): string {
  if (!reason) return 'flagged for review';
  return FLAG_TEXT[reason] ?? reason.replace(/_/g, ' ');
}

export function colorOf(p: Project | null, label: string | null | undefined): string {
  if (!label) return 'var(--muted)';
  if (label === 'unsure') return '#8a8f98';
  if (label === 'skip') return '#5f6670';
  return classesOf(p).find((c) => c.name === label)?.color ?? 'var(--accent)';
}

/** Browsers can show these originals directly; others go through thumbnails/tiles. */
export function browserImage(item: Item): boolean {
  return ['png', 'jpeg', 'jpg', 'gif', 'webp', 'bmp'].includes(item.format.toLowerCase());
}

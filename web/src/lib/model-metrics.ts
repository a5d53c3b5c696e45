// A model version's cross-validated metrics (ModelVersionPublic.metrics, which the
// OpenAPI types only know as an object) and the helpers the Models page and the
// task kinds' charts share.
import type { ModelVersion } from './api';
import { SERIES_COLORS, type Series } from '../components/charts/types';

export type Stats = Record<string, unknown> & {
  accuracy?: number | null;
  balanced_accuracy?: number | null;
  per_class?: Record<string, { precision: number | null; recall: number | null; support: number }>;
  confusion?: number[][];
  ece?: number | null;
  ece_before?: number | null;
  ece_after?: number | null;
  per_metric?: Record<string, { mae: number | null; within_one_step: number | null; spearman: number | null }>;
};

export interface VersionMetrics {
  task?: 'classes' | 'scores';
  class_names?: string[];
  metrics?: { name: string }[];
  ensemble?: Stats;
  members?: Record<string, Stats | null>;
  temperatures?: Record<string, number>;
  flagged?: number;
  flag_reasons?: Record<string, number>;
}

export const versionMetrics = (v: ModelVersion): VersionMetrics => (v.metrics ?? {}) as VersionMetrics;

/** The ensemble's members, from the metrics or else from the version's member list. */
export function memberNames(v: ModelVersion): string[] {
  const fromMetrics = Object.keys(versionMetrics(v).members ?? {});
  if (fromMetrics.length) return fromMetrics;
  return (v.members ?? []).map((m) => (typeof m === 'string' ? m : String((m as { name?: string }).name ?? m)));
}

/** The score metrics a version was evaluated on. */
export function metricNames(v: ModelVersion): string[] {
  const m = versionMetrics(v);
  return m.metrics?.map((x) => x.name) ?? Object.keys(m.ensemble?.per_metric ?? {});
}

export function meanOf(values: (number | null | undefined)[]): number | null {
  const ok = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : null;
}

/** The ensemble first, then each member: one series per model. */
export function bySource(v: ModelVersion, pick: (s: Stats) => (number | null | undefined)[]): Series[] {
  const m = versionMetrics(v);
  const out: Series[] = [];
  if (m.ensemble) out.push({ name: 'ensemble', color: SERIES_COLORS[0], values: pick(m.ensemble) });
  memberNames(v).forEach((name, k) => {
    const s = m.members?.[name];
    if (s) out.push({ name, color: SERIES_COLORS[(k + 1) % SERIES_COLORS.length], values: pick(s) });
  });
  return out;
}

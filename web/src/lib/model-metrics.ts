// A model version's cross-validated metrics (ModelVersionPublic.metrics, which the
// OpenAPI types only know as an object) and the helpers the Models page and the
// task kinds' charts share.
import type { ModelVersion } from './api';
import { SERIES_COLORS, type Series } from '../components/charts/types';

export type Stats = Record<string, unknown> & {
  n?: number | null;
  accuracy?: number | null;
  accuracy_ci?: [number, number] | null;
  balanced_accuracy?: number | null;
  per_class?: Record<string, { precision: number | null; recall: number | null; support: number }>;
  confusion?: number[][];
  ece?: number | null;
  ece_before?: number | null;
  ece_after?: number | null;
  per_metric?: Record<
    string,
    { mae: number | null; mae_ci?: [number, number] | null; within_one_step: number | null; spearman: number | null }
  >;
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

/** A share never rounded to 100% or 0% unless it is exactly that (as the server's format_rate). */
function pct(v: number, round: (x: number) => number = Math.round): string {
  let r = round(v * 100);
  if (r >= 100 && v < 1) r = 99;
  if (r <= 0 && v > 0) r = 1;
  return `${r}%`;
}

/** '100% (18 labels, 95% CI 82-100%)': a rate with the labels it rests on and its interval. */
export function rateWithCI(p: number | null | undefined, n: number | null | undefined, ci?: [number, number] | null): string {
  if (p == null) return '–';
  const parts: string[] = [];
  if (n != null) parts.push(`${n} label${n === 1 ? '' : 's'}`);
  if (ci) parts.push(`95% CI ${pct(ci[0], Math.floor).replace('%', '')}-${pct(ci[1], Math.ceil)}`);
  return parts.length ? `${pct(p)} (${parts.join(', ')})` : pct(p);
}

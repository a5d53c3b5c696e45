// Shared by the chart components.
export interface Series {
  name: string;
  color: string;
  values: (number | null | undefined)[];
}

/** Colours for chart series: the ensemble first, then its members. */
export const SERIES_COLORS = ['#2563eb', '#f59e0b', '#10b981', '#8b5cf6', '#ef4444', '#14b8a6'];

export const percent = (v: number): string => `${Math.round(v * 100)}%`;
export const decimal = (v: number): string => (Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(2));

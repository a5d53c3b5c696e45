// Score: numeric scores per image on fixed ranges, typed in a side panel.
import { SERIES_COLORS, decimal } from '../../components/charts/types';
import { meanOf, metricNames, versionMetrics } from '../../lib/model-metrics';
import { fmt, labelText } from '../../lib/schema';
import type { TaskUI } from '../types';
import ModelCharts from './ModelCharts.svelte';
import SchemaEditor from './SchemaEditor.svelte';
import SidePanel from './SidePanel.svelte';
import TileFooter from './TileFooter.svelte';

const score: TaskUI = {
  label: 'Scoring',
  title: 'Score',
  description: 'Numeric scores per image on fixed ranges (e.g. grades 0–4)',
  SchemaEditor,
  SidePanel,
  TileFooter,
  tileFooterHeight: 74,
  chipText: (item) => (item.annotation?.kind === 'scores' ? 'scored' : labelText(item)),
  DetailPanel: null,
  draftText: (item) =>
    Object.entries((item.draft?.output as { scores?: Record<string, number> } | undefined)?.scores ?? {})
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(' · '),
  SelectionBar: null,
  keymap: ({ detailOpen }) => [
    {
      key: 'enter',
      kbd: 'Enter',
      hint: 'edit scores',
      run: () => {
        if (detailOpen()) return false;
        document.querySelector<HTMLInputElement>('.side input[type=number]')?.focus();
      },
    },
  ],
  flagReasons: [
    { value: 'novel', text: 'Unlike the labelled images' },
    { value: 'members differ', text: 'Models disagree' },
    { value: 'wide interval', text: 'Wide interval' },
  ],
  importHint: ', scores in one column per metric',
  models: {
    summaryHeading: 'Error',
    summary: (m) => {
      if (!m.ensemble) return '–';
      const per = Object.values(m.ensemble.per_metric ?? {});
      const mae = meanOf(per.map((x) => x.mae));
      if (mae == null) return '–';
      const lo = meanOf(per.map((x) => x.mae_ci?.[0]));
      const hi = meanOf(per.map((x) => x.mae_ci?.[1]));
      const n = m.ensemble.n;
      const extra = [n != null ? `${n} labels` : '', lo != null && hi != null ? `95% CI ${decimal(lo)}-${decimal(hi)}` : '']
        .filter(Boolean)
        .join(', ');
      return `MAE ${decimal(mae)}${extra ? ` (${extra})` : ''}`;
    },
    firstTrainingHint: 'at least three, on every metric',
    trend: (ready, selected) => ({
      title: 'Mean absolute error per version',
      series: (selected ? metricNames(selected) : []).map((name, k) => ({
        name: `${name} MAE`,
        color: SERIES_COLORS[k % SERIES_COLORS.length],
        values: ready.map((v) => versionMetrics(v).ensemble?.per_metric?.[name]?.mae),
      })),
      max: 0,
      format: decimal,
    }),
    Charts: ModelCharts,
  },
};

export default score;

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
  importHint: ', scores in one column per metric',
  models: {
    summaryHeading: 'Error',
    summary: (m) => {
      if (!m.ensemble) return '–';
      const mae = meanOf(Object.values(m.ensemble.per_metric ?? {}).map((x) => x.mae));
      return mae == null ? '–' : `MAE ${decimal(mae)}`;
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

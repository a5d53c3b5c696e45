// Classify: one class per image, chosen with the class's hotkey.
import { SERIES_COLORS, percent } from '../../components/charts/types';
import { rateWithCI, versionMetrics } from '../../lib/model-metrics';
import { classesOf, labelText, pct } from '../../lib/schema';
import type { TaskUI } from '../types';
import DetailPanel from './DetailPanel.svelte';
import ModelCharts from './ModelCharts.svelte';
import SchemaEditor from './SchemaEditor.svelte';
import SelectionBar from './SelectionBar.svelte';
import TileFooter from './TileFooter.svelte';

const classify: TaskUI = {
  label: 'Classification',
  title: 'Classify',
  description: 'One class per image, with hotkeys (e.g. cell types)',
  SchemaEditor,
  SidePanel: null,
  TileFooter,
  tileFooterHeight: 52,
  chipText: labelText,
  DetailPanel,
  draftText: (item) => `${item.draft?.label ?? '—'} · ${pct(item.draft?.confidence)} confidence`,
  SelectionBar,
  keymap: ({ project, label }) =>
    classesOf(project)
      .filter((c) => c.hotkey)
      .map((c) => ({
        key: c.hotkey!.toLowerCase(),
        kbd: c.hotkey!.toUpperCase(),
        hint: c.name,
        run: () => label({ kind: 'class', label: c.name }, c.name),
      })),
  flagReasons: [
    { value: 'novel', text: 'Unlike the labelled images' },
    { value: 'disagreement', text: 'Models disagree' },
    { value: 'low_confidence', text: 'Low confidence' },
    { value: 'ambiguous_set', text: 'More than one likely class' },
  ],
  importHint: '',
  models: {
    summaryHeading: 'Accuracy / balanced',
    summary: (m) => {
      const e = m.ensemble;
      if (!e) return '–';
      const b = e.balanced_accuracy;
      return `${rateWithCI(e.accuracy, e.n, e.accuracy_ci)} / ${b == null ? '–' : percent(b)}`;
    },
    firstTrainingHint: 'at least two in each of two classes',
    trend: (ready) => ({
      title: 'Accuracy per version (cross-validated)',
      series: [
        { name: 'accuracy', color: SERIES_COLORS[0], values: ready.map((v) => versionMetrics(v).ensemble?.accuracy) },
        {
          name: 'balanced accuracy',
          color: SERIES_COLORS[1],
          values: ready.map((v) => versionMetrics(v).ensemble?.balanced_accuracy),
        },
      ],
      max: 1,
      format: percent,
    }),
    Charts: ModelCharts,
  },
};

export default classify;

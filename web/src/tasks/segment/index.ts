// Segment: 2-D masks per class, drawn from clicks, strokes and a brush while a
// model trained on pixel features paints the rest. The item page is the kind's
// own editor (Viewer); the grid's side panel opens it. Server side:
// src/loupe/tasks/segment.py and the /api/projects/{id}/segment routes.
import { decimal } from '../../components/charts/types';
import { labelText } from '../../lib/schema';
import type { TaskUI } from '../types';
import ModelCharts from './ModelCharts.svelte';
import SchemaEditor from './SchemaEditor.svelte';
import SegmentEditor from './SegmentEditor.svelte';
import SidePanel from './SidePanel.svelte';
import TileFooter from './TileFooter.svelte';
import { meanDice } from './segment-api';

const diceOf = (m: unknown): number | null =>
  meanDice((m as { val_dice?: number | Record<string, number> } | null)?.val_dice);

const segment: TaskUI = {
  label: 'Segmentation',
  title: 'Segment',
  description: '2-D masks per class from clicks, strokes and a brush, with a live model',
  Viewer: SegmentEditor,
  SchemaEditor,
  SidePanel,
  TileFooter,
  tileFooterHeight: 52,
  chipText: (item) => (item.annotation ? (item.annotation.kind === 'mask' ? 'mask' : 'points') : labelText(item)),
  DetailPanel: null,
  draftText: (item) => (item.draft ? 'model prediction available: open the segmentation editor' : '—'),
  SelectionBar: null,
  keymap: ({ project }) => [
    {
      key: 'enter',
      kbd: 'Enter',
      hint: 'open in the segmentation editor',
      run: () => {
        const link = document.querySelector<HTMLAnchorElement>(`.side a[href^="/projects/${project.id}/items/"]`);
        if (!link) return false;
        link.click();
      },
    },
  ],
  importHint: ', masks as PNG / TIFF label images',
  models: {
    summaryHeading: 'Validation Dice',
    summary: (m) => {
      const d = diceOf(m);
      return d === null ? '–' : `mean ${decimal(d)}`;
    },
    firstTrainingHint: 'a few foreground and background points on one image',
    trend: () => null,
    Charts: ModelCharts,
  },
};

export default segment;

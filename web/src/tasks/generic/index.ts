// The UI of a kind the server has and this app has no folder for yet: it shows
// the items, drafts and labels, and says that labelling needs a newer web app.
import ClassesEditor from '../../components/ClassesEditor.svelte';
import { labelText, pct } from '../../lib/schema';
import type { TaskUI } from '../types';
import ModelCharts from './ModelCharts.svelte';
import SidePanel from './SidePanel.svelte';
import TileFooter from './TileFooter.svelte';

export interface KindNames {
  label: string;
  title: string;
  description: string;
}

export function genericUI(kind: string, names?: KindNames): TaskUI {
  return {
    label: names?.label ?? kind,
    title: names?.title ?? kind,
    description: names?.description ?? '',
    // The kinds still to come (segment, volume) are defined by their classes.
    SchemaEditor: ClassesEditor,
    SidePanel,
    TileFooter,
    tileFooterHeight: 52,
    chipText: labelText,
    DetailPanel: null,
    draftText: (item) => `${item.draft?.label ?? '—'} · ${pct(item.draft?.confidence)} confidence`,
    SelectionBar: null,
    keymap: () => [],
    importHint: '',
    models: {
      summaryHeading: 'Summary',
      summary: () => '–',
      firstTrainingHint: '',
      trend: () => null,
      Charts: ModelCharts,
    },
  };
}

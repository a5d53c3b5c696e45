// Volume: 3-D label masks of NIfTI / DICOM volumes, edited in NiiVue (lazy-loaded).
// The item page is the kind's own 3-D editor (Viewer); the grid's side panel opens
// it and shows the feedback dashboard. Server side: src/loupe/tasks/volume.py and
// the /api/projects/{id}/volume routes.
import ClassesEditor from '../../components/ClassesEditor.svelte';
import { decimal } from '../../components/charts/types';
import { labelText } from '../../lib/schema';
import TileFooter from '../generic/TileFooter.svelte';
import type { TaskUI } from '../types';
import ModelCharts from './ModelCharts.svelte';
import SidePanel from './SidePanel.svelte';
import VolumeEditor from './VolumeEditor.svelte';

const meanOf = (d: Record<string, number> | undefined): number | null => {
  const v = Object.values(d ?? {});
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
};

const volume: TaskUI = {
  label: '3-D volumes',
  title: 'Volume',
  description: '3-D masks per class on NIfTI / DICOM volumes, edited in three views',
  Viewer: VolumeEditor,
  // One file is one request, so a DICOM series comes as a ZIP (the server expands it;
  // files without a suffix would each become a one-slice volume).
  upload: {
    button: 'Add volumes',
    accept: '.nii,.nii.gz,.gz,.dcm,.zip,application/zip,application/x-zip-compressed,application/dicom',
    title: 'NIfTI files, DICOM files, or a ZIP holding one DICOM series',
  },
  SchemaEditor: ClassesEditor,
  SidePanel,
  TileFooter,
  tileFooterHeight: 52,
  chipText: (item) => (item.annotation ? 'corrected' : labelText(item)),
  DetailPanel: null,
  draftText: (item) => (item.draft ? 'model mask available: open the 3-D editor' : '—'),
  SelectionBar: null,
  keymap: ({ project }) => [
    {
      key: 'enter',
      kbd: 'Enter',
      hint: 'open in the 3-D editor',
      run: () => {
        const link = document.querySelector<HTMLAnchorElement>(`.side a[href^="/projects/${project.id}/items/"]`);
        if (!link) return false;
        link.click();
      },
    },
  ],
  importHint: '',
  models: {
    summaryHeading: 'Validation Dice',
    summary: (m) => {
      const d = meanOf((m as unknown as { val_dice?: Record<string, number> }).val_dice);
      return d === null ? '–' : `mean ${decimal(d)}`;
    },
    firstTrainingHint: 'corrected masks on enough volumes (the project setting)',
    trend: () => null,
    Charts: ModelCharts,
  },
};

export default volume;

// The web side of a task kind: everything the app shows or does differently for
// classify, score, ... A kind is one folder web/src/tasks/<kind>/ exporting a
// TaskUI, plus one entry in TASK_UI (index.ts); the pages only ask taskUI(kind)
// and never compare a project's task with a name. The server's counterpart is
// src/loupe/tasks/<kind>.py.
import type { Component } from 'svelte';
import type { Item, ModelVersion, Project } from '../lib/api';
import type { Grid } from '../lib/grid.svelte';
import type { VersionMetrics } from '../lib/model-metrics';
import type { LabelValue } from '../lib/schema';
import type { Series } from '../components/charts/types';

/** Label the focused or selected items of the grid; `what` names it in messages. */
export type LabelFn = (value: LabelValue, what: string) => void;

/** The editor of the label schema on the New project page. */
export interface SchemaEditorProps {
  palette: string[];
}
export interface SchemaEditorExports {
  /** The `schema` of the new project, or a message saying what is wrong. */
  build(): { schema: Record<string, unknown> } | { error: string };
}

/** The column beside the grid, for the focused item (null when nothing is focused). */
export interface SidePanelProps {
  project: Project;
  item: Item | null;
  onsaved: (item: Item) => void;
}

/** What a tile shows under its file name. */
export interface TileFooterProps {
  item: Item;
  project: Project;
  onlabel: (item: Item, value: LabelValue | null) => void;
}

/** The labelling controls of the item dialog (Enter). */
export interface DetailPanelProps {
  item: Item;
  project: Project;
  onlabel: (value: LabelValue | null) => void;
}

/** Buttons in the grid's header while items are selected. */
export interface SelectionBarProps {
  project: Project;
  grid: Grid;
  label: LabelFn;
}

export interface KeyContext {
  project: Project;
  label: LabelFn;
  /** Whether the item dialog is open. */
  detailOpen: () => boolean;
}

/** One key of the grid, shown in the footer of the project page. */
export interface KeyBinding {
  /** `KeyboardEvent.key` in lower case, e.g. '1' or 'enter'. */
  key: string;
  /** How the footer writes the key, e.g. '1' or 'Enter'. */
  kbd: string;
  /** What it does, e.g. 'lymphocyte'. */
  hint: string;
  /** Do it; return false to leave the key to the grid. */
  run: () => boolean | void;
}

export interface TrendChart {
  title: string;
  series: Series[];
  /** The top of the y axis; 0: from the data. */
  max: number;
  format: (v: number) => string;
}

/** The kind's part of the Models page. */
export interface ModelsUI {
  /** Heading of the versions table's summary column. */
  summaryHeading: string;
  summary: (m: VersionMetrics) => string;
  /** What to label before the first training, e.g. 'at least three, on every metric'. */
  firstTrainingHint: string;
  /** The line chart over the versions (`ready` is oldest first); null: none. */
  trend: (ready: ModelVersion[], selected: ModelVersion | null) => TrendChart | null;
  /** The charts of one trained version. */
  Charts: Component<{ version: ModelVersion }>;
}

/** A kind's own page for one item (e.g. the 3-D editor), shown by the item viewer route. */
export interface ViewerProps {
  project: Project;
  item: Item;
}

export interface TaskUI {
  /** The item page's content; absent: the zoomable 2-D image viewer. */
  Viewer?: Component<ViewerProps> | null;
  /** Its name in lists, e.g. 'Classification'. */
  label: string;
  /** Its name and a line about it on the New project page. */
  title: string;
  description: string;
  SchemaEditor: Component<SchemaEditorProps, SchemaEditorExports>;
  /** The file picker of the project bar: its button, `accept` list and tooltip;
   * absent: 'Add images', any file. */
  upload?: { button: string; accept: string; title: string };
  /** null: the grid takes the whole width (uploads may still open a side column). */
  SidePanel: Component<SidePanelProps> | null;
  TileFooter: Component<TileFooterProps>;
  /** The height of a tile below its thumbnail, in px (the virtual grid needs it). */
  tileFooterHeight: number;
  /** The text of the chip on a labelled tile. */
  chipText: (item: Item) => string;
  /** null: the item dialog shows the label but offers no way to change it. */
  DetailPanel: Component<DetailPanelProps> | null;
  /** The model's draft in words, for the item dialog. */
  draftText: (item: Item) => string;
  SelectionBar: Component<SelectionBarProps> | null;
  /** The kind's own keys; they go before the grid's (arrows, 0, X, Z, A...). */
  keymap: (ctx: KeyContext) => KeyBinding[];
  /** The flag reasons the grid's filter offers ({value: the reason or its start, text}). */
  flagReasons?: { value: string; text: string }[];
  /** Added to the label-import help on the Export page, e.g. where scores go. */
  importHint: string;
  models: ModelsUI;
}

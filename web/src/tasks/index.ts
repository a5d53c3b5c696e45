// The task kinds the web app knows: one entry per folder in web/src/tasks/.
// Pages ask taskUI(project.task) for the kind's panels, keys and charts; a kind
// the server has but this table lacks gets a generic UI instead of a crash.
import classify from './classify';
import score from './score';
import segment from './segment';
import volume from './volume';
import { genericUI, type KindNames } from './generic';
import type { TaskUI } from './types';

export const TASK_UI: Record<string, TaskUI> = { classify, score, segment, volume };

/** Kinds the server knows whose web UI comes later: named here so menus can offer them. */
const PLANNED: Record<string, KindNames> = {};

/** The kinds to offer before the server's /api/info has answered. */
export const KNOWN_TASKS: string[] = [...Object.keys(TASK_UI), ...Object.keys(PLANNED)];
export const DEFAULT_TASK: string = KNOWN_TASKS[0];

const generic = new Map<string, TaskUI>();

/** The UI of a task kind; the same object for the same kind. */
export function taskUI(kind: string): TaskUI {
  if (Object.hasOwn(TASK_UI, kind)) return TASK_UI[kind];
  let ui = generic.get(kind);
  if (!ui) generic.set(kind, (ui = genericUI(kind, Object.hasOwn(PLANNED, kind) ? PLANNED[kind] : undefined)));
  return ui;
}

// Asking which case files or items belong to (uploads into 'All items', moving
// selected items); used by the project page.
import { api, messageOf, type Case } from './api';
import { toast } from './toast.svelte';
import { caseOfUpload, inCaseFolders } from './uploads.svelte';

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The case an upload goes into: the open case, else asked; '' = from sub-folders or the
 * project's case pattern; null = the user cancelled (nothing is uploaded). */
export function uploadCase(entries: { file: File; name: string }[], current: Case | null): string | null {
  if (current) return current.name;
  // A folder of case sub-folders needs no answer: each sub-folder is a case.
  if (inCaseFolders(entries)) return '';
  const answer = window.prompt(
    `Upload ${plural(entries.length, 'file')} into which case? ` +
      "Leave empty to take the cases from sub-folder names or the project's case pattern.",
    caseOfUpload(entries),
  );
  return answer === null ? null : answer.trim();
}

/** Ask for a case name and move the items there (a new name creates it); true when moved. */
export async function moveItemsToCase(projectId: number, ids: number[]): Promise<boolean> {
  const name = window
    .prompt(`Move ${plural(ids.length, 'item')} to which case? A new name creates the case.`, '')
    ?.trim();
  if (!name) return false;
  try {
    const target = await api.post('/api/projects/{project_id}/cases/move', {
      path: { project_id: projectId },
      body: { item_ids: ids, case_name: name },
    });
    toast(`Moved ${plural(ids.length, 'item')} to case ${target.name}`, 'success');
    return true;
  } catch (e) {
    toast(messageOf(e), 'error');
    return false;
  }
}

// The upload queue: every file is one request, a few in flight at a time, so
// neither the browser (files are streamed from disk, never read into memory)
// nor the server (it ingests one file per request) runs out of memory with
// hundreds of big TIFFs. Finished files can be reviewed while the rest upload.
import { ApiError, csrf, reauthenticate, type UploadReport } from './api';

export type UploadStatus = 'pending' | 'uploading' | 'processing' | 'done' | 'failed';

export interface QueuedFile {
  id: number;
  file: File;
  /** The name sent to the server: 'folder/case/x.tif' for a folder upload. */
  name: string;
  status: UploadStatus;
  progress: number;
  message: string;
  itemIds: number[];
  /** The case chosen when the file was queued ('' : from the folder name). */
  caseName: string;
}

const CONCURRENCY = 3;
let nextId = 1;

export class UploadQueue {
  files: QueuedFile[] = $state([]);
  active = $state(0);
  projectId: number;
  /** Called after each file finishes, with the item ids it produced. */
  onFileDone: (ids: number[]) => void = () => {};

  constructor(projectId: number) {
    this.projectId = projectId;
  }

  counts(): Record<UploadStatus, number> {
    const c = { pending: 0, uploading: 0, processing: 0, done: 0, failed: 0 };
    for (const f of this.files) c[f.status]++;
    return c;
  }

  get busy(): boolean {
    return this.files.some((f) => f.status === 'pending' || f.status === 'uploading' || f.status === 'processing');
  }

  add(entries: { file: File; name: string }[], caseName: string): void {
    for (const { file, name } of entries) {
      this.files.push({ id: nextId++, file, name, status: 'pending', progress: 0, message: '', itemIds: [], caseName });
    }
    this.pump();
  }

  retryFailed(): void {
    for (const f of this.files) if (f.status === 'failed') Object.assign(f, { status: 'pending', progress: 0, message: '' });
    this.pump();
  }

  clearFinished(): void {
    this.files = this.files.filter((f) => f.status !== 'done');
  }

  private pump(): void {
    while (this.active < CONCURRENCY) {
      const next = this.files.find((f) => f.status === 'pending');
      if (!next) return;
      next.status = 'uploading';
      this.active++;
      this.send(next).finally(() => {
        this.active--;
        this.pump();
      });
    }
  }

  private async send(f: QueuedFile): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const report = await postFile(this.projectId, f, f.caseName);
        const failed = (report.failed ?? [])[0];
        if (failed && report.imported + report.existing === 0) {
          f.status = 'failed';
          f.message = failed.reason;
        } else {
          f.status = 'done';
          f.progress = 1;
          // a ZIP may hold files that could not be read beside those imported
          const skipped = (report.failed ?? []).length;
          f.message = skipped
            ? `${skipped} file${skipped > 1 ? 's' : ''} skipped: ${failed.path}: ${failed.reason}`
            : report.existing && !report.imported
              ? 'already in the project'
              : '';
          f.itemIds = report.item_ids ?? [];
          this.onFileDone(f.itemIds);
        }
        return;
      } catch (e) {
        if (e instanceof ApiError && (e.status === 401 || e.code === 'csrf_failed') && attempt === 0) {
          f.status = 'uploading';
          f.progress = 0;
          await reauthenticate();
          continue;
        }
        f.status = 'failed';
        f.message = e instanceof Error ? e.message : String(e);
        return;
      }
    }
  }
}

function postFile(projectId: number, f: QueuedFile, caseName: string): Promise<UploadReport> {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    if (caseName) form.append('case', caseName);
    form.append('files', f.file, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/projects/${projectId}/uploads`);
    xhr.setRequestHeader('X-CSRF-Token', csrf());
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) f.progress = e.loaded / e.total;
    };
    xhr.upload.onload = () => {
      f.status = 'processing';
      f.progress = 1;
    };
    xhr.onerror = () => reject(new ApiError(0, { code: 'network', message: 'network error: the server cannot be reached' }));
    xhr.onload = () => {
      let body: unknown = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body as UploadReport);
      const d = (body as { detail?: { code?: string; message?: string } } | null)?.detail;
      reject(
        new ApiError(xhr.status, {
          code: d?.code ?? `http_${xhr.status}`,
          message: d?.message ?? `upload failed: ${xhr.status} ${xhr.statusText}`,
        }),
      );
    };
    xhr.send(form);
  });
}

/** Files of a drop, walking into dropped folders; names keep the folder path. */
export async function filesFromDrop(dt: DataTransfer): Promise<{ file: File; name: string }[]> {
  const entries = [...dt.items]
    .map((i) => (i.kind === 'file' ? i.webkitGetAsEntry?.() : null))
    .filter((e): e is FileSystemEntry => !!e);
  if (!entries.length) return [...dt.files].map((file) => ({ file, name: file.name }));
  const out: { file: File; name: string }[] = [];
  async function walk(entry: FileSystemEntry, prefix: string): Promise<void> {
    if (entry.isFile) {
      const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
      out.push({ file, name: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      // readEntries returns at most ~100 entries per call: read until empty.
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  }
  for (const e of entries) await walk(e, '');
  return out.filter((x) => !x.name.split('/').some((part) => part.startsWith('.')));
}

export function filesFromInput(list: FileList | null): { file: File; name: string }[] {
  return [...(list ?? [])]
    .map((file) => ({ file, name: file.webkitRelativePath || file.name }))
    .filter((x) => !x.name.split('/').some((part) => part.startsWith('.')));
}

/**
 * The case an upload suggests: the folder's name when one folder of images was
 * given ('slides/a.png', 'slides/b.png' -> 'slides'); '' otherwise (single files,
 * or a folder of case sub-folders, which the server splits by sub-folder name).
 */
export function caseOfUpload(entries: { name: string }[]): string {
  const parts = entries.map((e) => e.name.split('/'));
  if (!parts.length || parts.some((p) => p.length !== 2)) return '';
  const folder = parts[0][0];
  return parts.every((p) => p[0] === folder) ? folder : '';
}

/** True when every file lies in a sub-folder of the uploaded folder ('root/case/x.tif'). */
export function inCaseFolders(entries: { name: string }[]): boolean {
  return entries.length > 0 && entries.every((e) => e.name.split('/').length >= 3);
}

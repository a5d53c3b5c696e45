// The upload queue: every file is one request, a few in flight at a time, so
// neither the browser (files are streamed from disk, never read into memory)
// nor the server (it ingests one file per request) runs out of memory with
// hundreds of big TIFFs. Finished files can be reviewed while the rest upload.
// The slices of a DICOM series are the exception: the server can only put them
// together when they arrive in one request, so the DICOM files of one folder
// (.dcm, .ima, or no suffix) are one entry, sent as one request.
import { ApiError, csrf, reauthenticate, type UploadReport } from './api';

export type UploadStatus = 'pending' | 'uploading' | 'processing' | 'done' | 'failed';

export interface QueuedFile {
  id: number;
  /** The file, or the first of a DICOM folder's files. */
  file: File;
  /** Every file this entry sends in its one request (a DICOM folder: all its slices). */
  parts: { file: File; name: string }[];
  /** Bytes of all parts. */
  size: number;
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
    for (const parts of bundleDicom(entries)) {
      const { file, name } = parts[0];
      const folder = name.includes('/') ? name.slice(0, name.lastIndexOf('/') + 1) : '';
      this.files.push({
        id: nextId++,
        file,
        parts,
        size: parts.reduce((n, p) => n + p.file.size, 0),
        name: parts.length > 1 ? `${folder || './'} (${parts.length} DICOM files)` : name,
        status: 'pending',
        progress: 0,
        message: '',
        itemIds: [],
        caseName,
      });
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
    for (const part of f.parts) form.append('files', part.file, part.name);
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

const DICOM_NAME = /(\.dcm|\.dicom|\.ima)$/i;
const OTHER_SUFFIX = /\.[a-z0-9]{1,5}$/i;

/** Whether a file is probably a DICOM slice: a DICOM suffix, or none at all (as
 * scanners write them: 'IM0001', '1.2.840...'); UIDs' dots make 'suffixes' of digits. */
export function looksDicom(name: string): boolean {
  const base = name.slice(name.lastIndexOf('/') + 1);
  if (DICOM_NAME.test(base)) return true;
  const suffix = base.match(OTHER_SUFFIX);
  return !suffix || /^\.\d+$/.test(suffix[0]);
}

/** The entries as request bundles: the DICOM files of each folder together (in the
 * order given), every other file alone. */
export function bundleDicom(entries: { file: File; name: string }[]): { file: File; name: string }[][] {
  const out: { file: File; name: string }[][] = [];
  const byFolder = new Map<string, { file: File; name: string }[]>();
  for (const e of entries) {
    if (!looksDicom(e.name)) {
      out.push([e]);
      continue;
    }
    const folder = e.name.includes('/') ? e.name.slice(0, e.name.lastIndexOf('/')) : '';
    let bundle = byFolder.get(folder);
    if (!bundle) {
      bundle = [];
      byFolder.set(folder, bundle);
      out.push(bundle);
    }
    bundle.push(e);
  }
  return out;
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

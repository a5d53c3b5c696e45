// The 3-D volume endpoints (src/loupe/api/routes/volume.py). JSON answers use the
// types generated from OpenAPI; volumes and masks are binary NIfTI, so those calls
// go through `send` and return bytes.
import { api, fillPath, send, type Job, type Schemas } from '../../lib/api';

export type MaskSaved = Schemas['MaskSaved'];
export type VolumeDashboard = Schemas['VolumeDashboard'];
export type DashboardVersion = Schemas['VersionSummary'];
export type InteractiveRequest = Schemas['InteractiveRequest'];

const base = (projectId: number) => fillPath('/api/projects/{project_id}/volume', { project_id: projectId });

export const imageUrl = (projectId: number, itemId: number): string =>
  `${base(projectId)}/items/${itemId}/image.nii.gz`;

export const maskUrl = (projectId: number, itemId: number, source: 'human' | 'model'): string =>
  `${base(projectId)}/items/${itemId}/mask.nii.gz?source=${source}`;

/** Store an edited mask (gzip'd NIfTI) as a new version of the item's annotation. */
export async function putMask(
  projectId: number,
  itemId: number,
  gz: Blob,
  { version, modelVersionId }: { version: number | null; modelVersionId: number | null },
): Promise<MaskSaved> {
  const q = new URLSearchParams();
  if (version !== null) q.set('version', String(version));
  if (modelVersionId !== null) q.set('model_version_id', String(modelVersionId));
  const qs = q.toString();
  const res = await send('PUT', `${base(projectId)}/items/${itemId}/mask${qs ? `?${qs}` : ''}`, {
    body: new Blob([gz], { type: 'application/gzip' }),
  });
  return (await res.json()) as MaskSaved;
}

/** Refit the voxel classifier on the clicks; the answer is a gzip'd uint8 NIfTI mask. */
export async function interactive(
  projectId: number,
  itemId: number,
  body: InteractiveRequest,
): Promise<{ bytes: ArrayBuffer; refitMs: number | null }> {
  const res = await send('POST', `${base(projectId)}/items/${itemId}/interactive`, { json: body });
  const ms = res.headers.get('X-Refit-Ms');
  return { bytes: await res.arrayBuffer(), refitMs: ms === null ? null : Number(ms) };
}

export function dashboard(projectId: number): Promise<VolumeDashboard> {
  return api.get('/api/projects/{project_id}/volume/dashboard', { path: { project_id: projectId } });
}

export function retrain(projectId: number): Promise<Job> {
  return api.post('/api/projects/{project_id}/volume/train', { path: { project_id: projectId } });
}

export function predict(projectId: number, itemIds?: number[]): Promise<Job> {
  return api.post('/api/projects/{project_id}/volume/predict', {
    path: { project_id: projectId },
    body: itemIds ? { item_ids: itemIds } : {},
  });
}

export async function activateVersion(projectId: number, versionId: number): Promise<void> {
  await api.post('/api/projects/{project_id}/versions/{version_id}/activate', {
    path: { project_id: projectId, version_id: versionId },
  });
}

/** gzip bytes in the browser (CompressionStream), as the PUT expects. */
export async function gzip(bytes: Uint8Array): Promise<Blob> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream('gzip'));
  return await new Response(stream).blob();
}

// A project's training: start one (Retrain), follow the running one live (SSE),
// and tell the page when a training has finished so it can show the new drafts.
// Trainings started elsewhere (automatic retraining after N labels, another
// user) are picked up by `check()`, which the page calls after labelling.
import { api, ApiError, followJob, messageOf, TERMINAL, type Job } from './api';

export class Training {
  projectId: number;
  job: Job | null = $state(null);
  error = $state('');
  starting = $state(false);
  /** Called once per finished training (status done, failed or cancelled). */
  onFinished: (job: Job) => void = () => {};
  /** Called when a `predict` job (new items drafted by the active model) finished. */
  onDrafted: (job: Job) => void = () => {};
  private stop: (() => void) | null = null;
  private followed = 0;
  private stopDrafts: (() => void) | null = null;
  /** The newest `predict` job seen (null: not looked yet); later ones are new. */
  private lastPredict: number | null = null;

  constructor(projectId: number) {
    this.projectId = projectId;
  }

  get running(): boolean {
    return !!this.job && !TERMINAL.has(this.job.status);
  }

  /** Start a training; 409 (one runs) and 422 (too few labels) show the server's message. */
  async start(mode: 'frozen' | 'finetune' = 'frozen'): Promise<void> {
    this.error = '';
    this.starting = true;
    try {
      const job = await api.post('/api/projects/{project_id}/train', {
        path: { project_id: this.projectId },
        body: { mode },
      });
      this.follow(job);
    } catch (e) {
      this.error = messageOf(e);
      // Busy: someone else's training runs; show its progress instead.
      if (e instanceof ApiError && e.code === 'busy') await this.check();
    } finally {
      this.starting = false;
    }
  }

  /** Find a queued or running training of this project and follow it. */
  async check(): Promise<void> {
    try {
      const page = await api.get('/api/projects/{project_id}/jobs', {
        path: { project_id: this.projectId },
        query: { kind: 'train', limit: 1 },
      });
      const job = page.data[0];
      if (job && !TERMINAL.has(job.status) && job.id !== this.followed) this.follow(job);
    } catch {
      /* the next check tries again */
    }
  }

  private async newestPredict(): Promise<Job | undefined> {
    const page = await api.get('/api/projects/{project_id}/jobs', {
      path: { project_id: this.projectId },
      query: { kind: 'predict', limit: 1 },
    });
    return page.data[0];
  }

  /** Before items are added: remember the newest `predict` job, so that the one the
   * workers start for the new items is recognised by `watchDrafts`. */
  async markDrafts(): Promise<void> {
    if (this.lastPredict !== null) return;
    try {
      this.lastPredict = (await this.newestPredict())?.id ?? 0;
    } catch {
      this.lastPredict = 0;
    }
  }

  /** After items were added: the workers draft them with the active model within
   * seconds (a `predict` job); follow it and call `onDrafted` when it is done. Gives
   * up after `waitMs` (no model, drafting off, or a training that drafts them). */
  async watchDrafts(waitMs = 30_000): Promise<void> {
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline && !this.stopDrafts) {
      try {
        const job = await this.newestPredict();
        if (job && job.id > (this.lastPredict ?? 0)) {
          this.lastPredict = job.id;
          if (TERMINAL.has(job.status)) {
            if (job.status === 'done') this.onDrafted(job);
            return;
          }
          this.stopDrafts = followJob(job.id, (j, ended) => {
            if (!ended) return;
            this.stopDrafts = null;
            if (j.status === 'done') this.onDrafted(j);
          });
          return;
        }
      } catch {
        /* try again */
      }
      await new Promise((r) => setTimeout(r, 1500));
    }
  }

  follow(job: Job): void {
    this.stop?.();
    this.job = job;
    this.followed = job.id;
    this.stop = followJob(job.id, (j, ended) => {
      this.job = j;
      if (ended) {
        this.stop = null;
        if (j.status === 'failed') this.error = `Training failed: ${j.error ?? j.message}`;
        this.onFinished(j);
      }
    });
  }

  close(): void {
    this.stop?.();
    this.stop = null;
    this.stopDrafts?.();
    this.stopDrafts = null;
  }
}

// One job followed live over its server-sent events: its newest state, whether it
// still runs, and a callback on each report and at its end. Following another job
// stops following the previous one; `close()` stops (e.g. when the page goes).
import { followJob, TERMINAL, type Job } from './api';
import { toast } from './toast.svelte';

export class FollowedJob {
  /** The job as last reported (its owner may also set it, e.g. to show the last run). */
  job = $state<Job | null>(null);
  private unfollow: (() => void) | null = null;

  get running(): boolean {
    return !!this.job && !TERMINAL.has(this.job.status);
  }

  /** Follow `job`; `onJob` gets each report once `this.job` holds it, `ended` at the last. */
  follow(job: Job, onJob: (job: Job, ended: boolean) => void = () => {}): void {
    this.unfollow?.();
    this.job = job;
    this.unfollow = followJob(job.id, (j, ended) => {
      this.job = j;
      if (ended) this.unfollow = null;
      onJob(j, ended);
    });
  }

  close(): void {
    this.unfollow?.();
    this.unfollow = null;
  }
}

/** Tell how an ended job went: `done` when it succeeded, else "`what` failed: error". */
export function toastEnded(job: Job, done: string, what: string): void {
  if (job.status === 'done') toast(done, 'success');
  else toast(`${what} ${job.status}: ${job.error ?? job.message ?? ''}`, 'error');
}

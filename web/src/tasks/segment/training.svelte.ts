// The project's continuous segmentation training as the editor sees it: start it
// for the item on screen, stop it, and follow its epochs, loss, validation Dice
// and heatmap revisions live over the job's server-sent events.
import { ApiError, messageOf, TERMINAL, type Job } from '../../lib/api';
import { FollowedJob } from '../../lib/followed-job.svelte';
import { meanDice, progressOf, status, stopJob, train, type TrainProgress } from './segment-api';

export class SegTraining {
  readonly projectId: number;
  error = $state('');
  busy = $state(false);
  /** The newest heatmap revision published for the viewed item (0: none yet this session). */
  heatmapRev = $state(0);
  /** The project's newest version ({id, number, status, active, metrics, ...}), from /status. */
  lastVersion = $state<Record<string, unknown> | null>(null);
  /** The project's segment settings with defaults filled in, from /status. */
  settings = $state<Record<string, unknown> | null>(null);
  /** Called when a training ends (done, failed or cancelled). */
  onended: (job: Job) => void = () => {};
  private readonly followed = new FollowedJob();

  constructor(projectId: number) {
    this.projectId = projectId;
  }

  /** The training followed, or the last run's (its epochs and Dice) when none runs. */
  get job(): Job | null {
    return this.followed.job;
  }

  get running(): boolean {
    return this.followed.running;
  }

  /** The newest epoch report seen (kept when a cancelled job's message no longer has it). */
  progress = $state<TrainProgress>({});

  get dice(): number | null {
    return meanDice(this.progress.val_dice);
  }

  /** Pick up a training that already runs (started elsewhere, or before a reload). */
  async check(): Promise<void> {
    try {
      const s = await status(this.projectId);
      this.lastVersion = s.last_version;
      this.settings = s.settings;
      if (s.job && !TERMINAL.has(s.job.status)) this.follow(s.job);
      else if (s.job && !this.job) {
        this.followed.job = s.job; // the last run's epochs and Dice
        this.seen(s.job);
      }
    } catch {
      /* no status yet: the buttons still work */
    }
  }

  async start(itemId: number | null, quiet = false): Promise<void> {
    this.error = '';
    this.busy = true;
    try {
      this.follow(await train(this.projectId, itemId));
    } catch (e) {
      // One training per project: 409 means one runs already; follow it instead.
      if (e instanceof ApiError && e.status === 409) await this.check();
      else if (!quiet) this.error = messageOf(e);
    } finally {
      this.busy = false;
    }
  }

  async stop(): Promise<void> {
    if (!this.job) return;
    this.busy = true;
    try {
      await stopJob(this.job.id);
    } catch (e) {
      this.error = messageOf(e);
    } finally {
      this.busy = false;
    }
  }

  private follow(job: Job): void {
    if (job.id !== this.job?.id) this.progress = {};
    this.seen(job);
    this.followed.follow(job, (j, ended) => {
      this.seen(j);
      if (ended) {
        if (j.status === 'failed') this.error = `Training failed: ${j.error ?? j.message}`;
        void this.check();
        this.onended(j);
      }
    });
  }

  private seen(job: Job): void {
    const p = progressOf(job);
    if (typeof p.epoch === 'number' || typeof p.val_dice !== 'undefined') this.progress = p;
    const rev = p.heatmap_rev;
    if (typeof rev === 'number' && rev > this.heatmapRev) this.heatmapRev = rev;
  }

  close(): void {
    this.followed.close();
  }
}

/**
 * A group's life as a state machine, so that every event (a connection dropping, a report, an
 * abort, close()) has one meaning in each state:
 *
 *   running ──disconnect──▶ suspecting ──verdict──▶ failed
 *      │                        │ close()                ▲
 *      │ abort / protocol error ▼                        │
 *      ├───────────────────────────────────────────────▶─┘
 *      └──close()──▶ closing ──▶ closed
 *
 * - running: operations run; a dropped connection makes this rank a suspect-finder.
 * - suspecting: one rank was seen to drop; the verdict (which rank is lost) is being settled
 *   (rank 0: the first report within a grace period; a worker: rank 0's abort, or its own
 *   suspicion when rank 0 does not answer in time). Further drops are the cascade: ignored.
 * - closing: leaving together (a last collective); peers leaving now are expected, not faults.
 * - failed, closed: final. In failed, every pending and later operation rejects with the error.
 */
export type GroupPhase = 'running' | 'suspecting' | 'closing' | 'closed' | 'failed';

/** Who is lost and why, as a report or an abort says it. */
export interface Verdict {
  rank: number;
  detail: string;
}

export class FaultState {
  private current: GroupPhase = 'running';
  private failureError: Error | undefined;
  private rejectFailed!: (err: Error) => void;
  /** Rejects with the failure: every operation races it (`guard`). */
  readonly failed: Promise<never>;
  /** Rank 0: the first report of a lost rank names the culprit (later ones are the cascade). */
  private firstReportSeen: Verdict | undefined;
  /** A worker: rank 0's verdict, once its abort arrived. */
  private verdictReceived: Verdict | undefined;
  private wake: (() => void) | undefined;

  constructor() {
    this.failed = new Promise<never>((_resolve, reject) => {
      this.rejectFailed = reject;
    });
    this.failed.catch(() => undefined); // observed through guard() in every operation
  }

  get phase(): GroupPhase {
    return this.current;
  }

  get failure(): Error | undefined {
    return this.failureError;
  }

  /** running → suspecting; false in any other phase (the drop is a cascade, or expected). */
  suspect(): boolean {
    if (this.current !== 'running') return false;
    this.current = 'suspecting';
    return true;
  }

  /** suspecting → running: the drop was explained by a clean close after all. */
  clearSuspicion(): void {
    if (this.current === 'suspecting') this.current = 'running';
  }

  /** Rank 0: a worker's report (the first one is kept). */
  report(verdict: Verdict): void {
    this.firstReportSeen ??= verdict;
  }

  get firstReport(): Verdict | undefined {
    return this.firstReportSeen;
  }

  /** A worker: rank 0's abort arrived; a worker waiting for it wakes up. */
  receiveVerdict(verdict: Verdict): void {
    this.verdictReceived ??= verdict;
    this.wake?.();
  }

  get verdict(): Verdict | undefined {
    return this.verdictReceived;
  }

  /**
   * A worker waits for rank 0's verdict: resolves when it arrives, when the group closes, or
   * after `timeoutMs` (rank 0 may be the one that is gone): an event or a timer, no polling.
   */
  waitForVerdict(timeoutMs: number): Promise<void> {
    if (this.verdictReceived || this.current === 'closed') return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const wake = this.wake;
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        wake?.();
        done();
      };
    });
  }

  /** Any phase but closed/failed → failed with `err`; false when already final. */
  fail(err: Error): boolean {
    if (this.current === 'failed' || this.current === 'closed') return false;
    this.current = 'failed';
    this.failureError = err;
    this.rejectFailed(err);
    this.wake?.();
    return true;
  }

  /** running → closing (a clean leave begins); false when not running. */
  startClosing(): boolean {
    if (this.current !== 'running') return false;
    this.current = 'closing';
    return true;
  }

  /** → closed, unless failed (a failure stays the group's outcome). */
  close(): void {
    if (this.current !== 'failed') this.current = 'closed';
    this.wake?.();
  }

  get isFinal(): boolean {
    return this.current === 'failed' || this.current === 'closed';
  }

  /** `p`, unless the group fails first. */
  guard<T>(p: Promise<T>): Promise<T> {
    if (this.failureError) return Promise.reject(this.failureError);
    return Promise.race([p, this.failed]);
  }
}

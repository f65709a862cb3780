/**
 * Progress on stderr (count, rate, ETA) so stdout stays pure data. On a TTY a cli-progress
 * bar; otherwise (CI logs, pipes to a file) one plain line every `intervalMs`.
 */
import { SingleBar } from 'cli-progress';

export interface ProgressOptions {
  label: string;
  unit?: string;
  /** Total count when known up front; enables ETA. */
  total?: number;
  /** Force on/off; default: on when stderr is a TTY or ALEXNET_STREAM_PROGRESS=1. */
  enabled?: boolean;
  intervalMs?: number;
}

export class Progress {
  private count = 0;
  private readonly startMs = Date.now();
  private lastLineMs = Date.now();
  private readonly bar?: SingleBar;
  private readonly enabled: boolean;
  private readonly intervalMs: number;

  constructor(private readonly options: ProgressOptions) {
    const tty = Boolean(process.stderr.isTTY);
    this.enabled = options.enabled ?? (tty || process.env.ALEXNET_STREAM_PROGRESS === '1');
    this.intervalMs = options.intervalMs ?? 5000;
    if (this.enabled && tty) {
      const unit = options.unit ?? 'items';
      this.bar = new SingleBar({
        stream: process.stderr,
        format: options.total
          ? `${options.label} [{bar}] {value}/{total} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}`
          : `${options.label} {value} ${unit} | {rate} ${unit}/s`,
        hideCursor: true,
        etaBuffer: 50,
      });
      this.bar.start(options.total ?? 0, 0, { rate: '0.0' });
    }
  }

  get ratePerSecond(): number {
    return this.count / Math.max(1e-3, (Date.now() - this.startMs) / 1000);
  }

  tick(n = 1): void {
    this.count += n;
    if (!this.enabled) return;
    if (this.bar) {
      this.bar.update(this.count, { rate: this.ratePerSecond.toFixed(1) });
    } else if (Date.now() - this.lastLineMs >= this.intervalMs) {
      this.lastLineMs = Date.now();
      process.stderr.write(`${this.line()}\n`);
    }
  }

  private line(): string {
    const unit = this.options.unit ?? 'items';
    const rate = this.ratePerSecond;
    const total = this.options.total;
    const eta = total && rate > 0 ? ` ETA ${Math.max(0, Math.round((total - this.count) / rate))} s` : '';
    return `${this.options.label}: ${this.count}${total ? `/${total}` : ''} ${unit}, ${rate.toFixed(1)} ${unit}/s${eta}`;
  }

  stop(): void {
    if (this.bar) this.bar.stop();
    else if (this.enabled) process.stderr.write(`${this.line()} (done)\n`);
  }
}

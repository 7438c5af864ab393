// The live window: the schedule plus an operator's manual window ("open now for 2h"), with listeners told of
// each change; the clock is injected. The schedule arithmetic is in schedule.ts.
import { currentEnd, isOpen, nextOpen, type Schedule } from './schedule.js';

export interface ManualWindow {
  openedAt: string;
  until: string;
  note: string;
  who: string;
}

export interface WindowStatus {
  open: boolean;
  /** When access closes; null when closed, or open with no foreseeable end ('always'). */
  until: Date | null;
  /** The next moment access opens after the current state; null when it never will (never, or always open). */
  nextOpen: Date | null;
  /** What keeps access open now: a scheduled window takes precedence over a manual one; null when closed. */
  source: 'schedule' | 'manual' | 'always' | null;
  /** Present while a manual window is in force. */
  manual?: ManualWindow;
}

/**
 * The schedule plus at most one manual window ("open now for 2h"). Persisting the manual window is the
 * caller's job: restore() it at start, and write it from onChange(). Opening again replaces the manual
 * window; close() ends only the manual window — a scheduled window cannot be shut from here.
 */
export class WindowState {
  private manualWindow: ManualWindow | null = null;
  private readonly listeners = new Set<(m: ManualWindow | null) => void>();

  constructor(
    readonly schedule: Schedule,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  open(durationMs: number, note: string, who: string): ManualWindow {
    if (!Number.isFinite(durationMs) || durationMs <= 0) {
      throw new Error(`window duration must be a positive number of milliseconds; got ${durationMs}`);
    }
    const now = this.clock().getTime();
    const m: ManualWindow = {
      openedAt: new Date(now).toISOString(),
      until: new Date(now + durationMs).toISOString(),
      note,
      who,
    };
    this.manualWindow = m;
    this.emit();
    return m;
  }

  close(): void {
    const had = this.manualWindow !== null;
    this.manualWindow = null;
    if (had) this.emit();
  }

  /** Loads a persisted manual window; does not notify listeners (nothing changed on disk). */
  restore(m: ManualWindow | null): void {
    this.manualWindow = m;
  }

  /** The manual window if one is in force at `now`. */
  manual(now: Date = this.clock()): ManualWindow | null {
    const m = this.manualWindow;
    return m && now.getTime() < Date.parse(m.until) ? m : null;
  }

  /** Returns a function that removes the listener. */
  onChange(listener: (m: ManualWindow | null) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  isOpen(now: Date = this.clock()): boolean {
    return isOpen(this.schedule, now) || this.manual(now) !== null;
  }

  status(now: Date = this.clock()): WindowStatus {
    const manual = this.manual(now) ?? undefined;
    const extra = manual ? { manual } : {};
    if (this.schedule === 'always') return { open: true, until: null, nextOpen: null, source: 'always', ...extra };
    const scheduled = isOpen(this.schedule, now);
    if (!scheduled && !manual) {
      return { open: false, until: null, nextOpen: nextOpen(this.schedule, now), source: null };
    }
    const until = this.closesAt(now, manual);
    return {
      open: true,
      until,
      nextOpen: until ? nextOpen(this.schedule, until) : null,
      source: scheduled ? 'schedule' : 'manual',
      ...extra,
    };
  }

  /** Manual and scheduled windows chain: whichever is open when the other ends carries access on. */
  private closesAt(now: Date, manual: ManualWindow | undefined): Date | null {
    let end = isOpen(this.schedule, now) ? currentEnd(this.schedule, now) : now;
    if (end === null) return null;
    const manualEnd = manual ? new Date(manual.until) : null;
    if (manualEnd && manualEnd > end) {
      end = isOpen(this.schedule, manualEnd) ? currentEnd(this.schedule, manualEnd) : manualEnd;
    }
    return end;
  }

  private emit(): void {
    for (const l of this.listeners) l(this.manualWindow);
  }
}

// The window state a server starts with: the configured schedule, and the operator's manual window restored and recorded.
import { recordManual, restoreManual, type ManualWindowStorage } from './manual-store.js';
import type { Schedule } from './schedule.js';
import { WindowState } from './state.js';

/** The operator's manual window survives restarts: it is kept beside the store and written on change. */
export async function openWindowState(
  schedule: Schedule,
  storage: ManualWindowStorage,
  now?: () => Date,
): Promise<{ window: WindowState; written: () => Promise<void>; recorded: () => Promise<void> }> {
  const window = new WindowState(schedule, now);
  await restoreManual(window, storage);
  const recorder = recordManual(window, storage, (e) => {
    process.stderr.write(`sluice: cannot record the manual window in ${storage.location}: ${String(e)}\n`);
  });
  return { window, written: recorder.idle, recorded: recorder.recorded };
}

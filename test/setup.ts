// Runs in every test file (vitest.config.ts setupFiles): after the file's
// last test, what its tests left behind is killed and removed, so a run
// leaves nothing in the system's temp folder. Registered first, so it runs
// after the file's own afterAll hooks (which stop servers and cores).
import { afterAll } from 'vitest';
import { cleanUp } from './helpers';

interface TaskLike {
  result?: { state?: string };
  tasks?: TaskLike[];
}

function failed(t: TaskLike): boolean {
  return t.result?.state === 'fail' || (t.tasks ?? []).some(failed);
}

afterAll(async (suite) => {
  await cleanUp(process.env.SWITCHBOARD_KEEP_TMP === '1' || failed(suite as TaskLike));
});

// Builds policy.js into image_deny.wasm, a component of the world
// `wasmdock:policy/task-admitter@0.1.0` (wit/ at the repository root).
//
// This calls componentize-js directly rather than `jco componentize`:
// jco 1.35.0's CLI cannot read the WIT directory (its bundled wasm-tools
// runs with no filesystem preopens and fails with "failed to get path
// metadata"). The result is the same component.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'image_deny.wasm');

const { component } = await componentize({
  sourcePath: join(here, 'policy.js'),
  witPath: join(here, '..', '..', '..', 'wit'),
  worldName: 'task-admitter',
  // The host links WASI but grants nothing: import none of it.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.error(`wrote ${out} (${component.byteLength} bytes)`);

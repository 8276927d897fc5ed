// Build the component: `npm run build` (or `mcpplus build`, which also stores
// the WIT doc comments in it and lists its tools).
import { mkdir, writeFile } from 'node:fs/promises';
import { componentize } from '@bytecodealliance/componentize-js';

const { component } = await componentize({
  sourcePath: 'app.js',
  witPath: 'wit',
  worldName: '{{name}}',
  // The engine's WASI features, each an import of the component. This tool
  // uses none, so it imports nothing; remove a name from the list to use it:
  //   'stdio'  console.log / console.error (the host logs guest output), and
  //            the message of an exception that escapes a function
  //   'random' Math.random, crypto.getRandomValues
  //   'clocks' Date.now, performance.now
  //   'http', 'fetch-event'  fetch() (needs a [network] grant in the policy)
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await mkdir('dist', { recursive: true });
await writeFile('dist/{{snake}}.wasm', component);
console.log('wrote dist/{{snake}}.wasm');

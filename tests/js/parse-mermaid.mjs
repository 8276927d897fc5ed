// Parse Mermaid charts with Mermaid's own parser (mermaid 12.3.0 under jsdom, no
// browser), for crates/workflow/tests/diagrams.rs. Install with
// scripts/install-diagram-tools.sh.
//
// stdin:  {"charts": [{"text": "flowchart LR\n…", "maxEdges": null | number}, …]}
// stdout: one line "MERMAID-RESULTS " + a JSON array, one entry per chart, in order:
//   {"ok": true, "diagramType": "flowchart-v2", "edges": 3, "labels": {"s0": "text", …}}
//   {"ok": false, "error": "Parse error on line 2: …"}
// `labels` are the node labels as a browser would show them: Mermaid's entity codes
// (#quot;, #35;) decoded, then HTML entities decoded, and <br> read as a newline.
// `maxEdges` raises Mermaid's edge limit (500 by default) for that chart only.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!DOCTYPE html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');

let input = '';
for await (const chunk of process.stdin) input += chunk;
const { charts } = JSON.parse(input);

const textarea = dom.window.document.createElement('textarea');
function shown(label) {
  // What mermaid's decodeEntities does at render time, then what the browser does.
  const html = label
    .replaceAll('ﬂ°°', '&#')
    .replaceAll('ﬂ°', '&')
    .replaceAll('¶ß', ';')
    .replace(/<br\s*\/?>/gi, '\n');
  textarea.innerHTML = html;
  return textarea.value;
}

const results = [];
for (const chart of charts) {
  mermaid.mermaidAPI.globalReset();
  const config = { startOnLoad: false };
  if (chart.maxEdges) config.maxEdges = chart.maxEdges;
  mermaid.initialize(config);
  try {
    const parsed = await mermaid.parse(chart.text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(chart.text);
    const labels = {};
    for (const [id, vertex] of diagram.db.getVertices()) labels[id] = shown(vertex.text ?? '');
    results.push({
      ok: true,
      diagramType: parsed.diagramType,
      edges: diagram.db.getEdges().length,
      labels,
    });
  } catch (error) {
    results.push({ ok: false, error: String(error?.message ?? error) });
  }
}
process.stdout.write('MERMAID-RESULTS ' + JSON.stringify(results) + '\n');

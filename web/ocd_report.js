// The run report under every OCD node that patches a model or samples: what the node actually
// did in the last run (UNet evaluations per phase, merged tokens, fused pairs, warnings).
// Sampler nodes return it as their "ocd_report" output; patch nodes (which finished before the
// sampler ran) receive it as an "ocd.report" message when the run ends.
// The text lives in a DOM element, never in widgets_values: saved workflows stay as they were.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const WIDGET = "ocd_run_report";
const MAX_LINES = 14;
const LINE_PX = 14;

function showReport(node, text) {
  if (!node || !text) return;
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    const element = document.createElement("div");
    element.className = "ocd-run-report";
    Object.assign(element.style, {
      font: `11px/${LINE_PX}px monospace`,
      whiteSpace: "pre-wrap",
      overflowWrap: "anywhere",
      overflowY: "auto",
      color: "var(--input-text, #ddd)",
      background: "var(--comfy-input-bg, #222)",
      borderRadius: "4px",
      padding: "4px",
      boxSizing: "border-box",
      width: "100%",
    });
    widget = node.addDOMWidget(WIDGET, "ocd_report", element, { serialize: false, hideOnZoom: false });
    widget.serialize = false;
    widget.element = element;
    // as tall as the text (capped), never wider than the node already is
    widget.computeSize = function (width) {
      const lines = Math.min(MAX_LINES, (this.element.textContent || "").split("\n").length);
      return [width, lines * LINE_PX + 10];
    };
  }
  widget.element.textContent = text;
  widget.element.title = text;
  const width = node.size[0];
  node.setSize([width, node.computeSize([width, node.size[1]])[1]]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "OCD.RunReport",
  setup() {
    api.addEventListener("ocd.report", ({ detail }) => {
      showReport(app.graph?.getNodeById(Number(detail?.node)) ?? app.graph?.getNodeById(detail?.node), detail?.text);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith("OCD_")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.ocd_report?.join("\n");
      if (text) showReport(this, text);
    };
  },
});

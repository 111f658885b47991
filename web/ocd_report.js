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
const CHAR_PX = 6.7; // width of one character of the 11 px monospace font

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
    // as tall as the text wrapped to the node's width (capped; it scrolls beyond), never
    // wider than the node already is
    const height = () => {
      const perLine = Math.max(20, Math.floor(((element.clientWidth || node.size[0] - 20) - 8) / CHAR_PX));
      const lines = (element.textContent || "").split("\n")
        .reduce((sum, line) => sum + Math.max(1, Math.ceil(line.length / perLine)), 0);
      return Math.min(MAX_LINES, lines) * LINE_PX + 10;
    };
    widget = node.addDOMWidget(WIDGET, "ocd_report", element, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: height,
      getHeight: height,
    });
    widget.serialize = false;
    widget.element = element;
    widget.computeSize = (width) => [width, height()];
  }
  widget.element.textContent = text;
  widget.element.title = text;
  // once the frontend has laid the widget out: tall enough for the text, the width kept
  requestAnimationFrame(() => {
    const width = node.size[0];
    node.setSize([width, Math.max(node.size[1], node.computeSize([width, node.size[1]])[1])]);
    node.size[0] = width;
    node.setDirtyCanvas?.(true, true);
  });
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

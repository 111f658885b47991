// The run report under every OCD node that patches a model or samples: what the node actually
// did in the last run (UNet evaluations per phase, merged tokens, fused pairs, warnings).
// Sampler nodes return it as their "ocd_report" output; patch nodes (which finished before the
// sampler ran) receive it as an "ocd.report" message when the run ends.
// The text lives in a DOM element, never in widgets_values: saved workflows stay as they were.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { showNodeText } from "./ocd_node_text.js";

const WIDGET = "ocd_run_report";

function showReport(node, text) {
  showNodeText(node, WIDGET, text, { className: "ocd-run-report", maxLines: 14 });
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

// OCD video nodes in the ComfyUI frontend: after "Load Video (OCD)" runs, show what was
// loaded (frames, fps, size, the source's, and the sound) on the node itself.
//
// The text comes in the node's "text" output. It is shown again when the workflow's tab is
// opened again: switching tabs rebuilds the nodes, and the frontend then hands each node's
// last outputs back through the onNodeOutputsUpdated hook (as its own audio and image
// previews do).
import { app } from "../../scripts/app.js";
import { showNodeText } from "./ocd_node_text.js";

const NODE_TYPE = "OCD_LoadVideo";
const INFO_WIDGET = "loaded";

function showLoaded(node, output, restoring = false) {
  const text = output?.text?.join("\n");
  if (text) showNodeText(node, INFO_WIDGET, text, { className: "ocd-video-loaded", maxLines: 6, growOnly: restoring });
}

app.registerExtension({
  name: "OCD.Video",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      showLoaded(this, message);
    };
  },
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [id, output] of Object.entries(nodeOutputs ?? {})) {
      // root-graph nodes are keyed by their id; a node inside a subgraph by "subgraph:id"
      const node = String(id).includes(":") ? null : app.graph?.getNodeById(Number(id));
      if (node?.comfyClass === NODE_TYPE) showLoaded(node, output, true);
    }
  },
});

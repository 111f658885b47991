// OCD video nodes in the ComfyUI frontend: after "Load Video (OCD)" runs, show what was
// loaded (frames, fps, size, and the source's) on the node itself.
import { app } from "../../scripts/app.js";

const INFO_WIDGET = "loaded";

app.registerExtension({
  name: "OCD.Video",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "OCD_LoadVideo") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text?.join("\n");
      if (!text) return;
      let widget = this.widgets?.find((w) => w.name === INFO_WIDGET);
      if (!widget) {
        widget = this.addWidget("text", INFO_WIDGET, "", () => {}, { serialize: false });
        widget.serialize = false; // never part of widgets_values: saved workflows stay compatible
        widget.disabled = true;
      }
      widget.value = text;
      this.setDirtyCanvas?.(true, true);
    };
  },
});

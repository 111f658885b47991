// Read-only text shown under a node in a DOM element (used by ocd_report.js and ocd_video.js).
// The text never goes into widgets_values, so saved workflows stay as they were; the element
// is as tall as its text (capped, then it scrolls) and never makes the node wider.
// A DOM element rather than a canvas "text" widget: the frontend draws a disabled text widget
// as its grey label only, and sizes the node to the widget's value, so long text widened it.

const LINE_PX = 14;
const MARGIN = 6; // around the element, inside the widget's slot (the frontend's default is 10)

// growOnly: keep a taller node as it is. For a node rebuilt from a saved graph (a tab opened
// again): its saved size already fits every widget, some of which (a video preview) are added
// only after this runs, so fitting it to the widgets present now would shrink it under them.
export function showNodeText(node, name, text, { className = "ocd-node-text", maxLines = 14, growOnly = false } = {}) {
  if (!node || !text) return null;
  let widget = node.widgets?.find((w) => w.name === name);
  if (!widget) {
    const element = document.createElement("div");
    element.className = className;
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
    // as tall as the text (capped, then it scrolls), never wider than the node already is. The
    // frontend lays DOM widgets out by getMinHeight/getMaxHeight: the slot, margins included
    // (the element gets the slot less twice the margin). Wrapped lines count: the element's
    // own content height once it is on the page (measured at height auto: the frontend
    // stretches it to the slot, which would keep it from ever shrinking), its line count before.
    // Never less than one line box per text line: an element that is on the page but not laid
    // out yet (its node out of view, hidden by the frontend) measures 0, and a slot sized to
    // that would stay collapsed once it is shown.
    const contentHeight = () => {
      const unwrapped = (element.textContent || "").split("\n").length * LINE_PX + 8;
      if (!element.isConnected) return unwrapped;
      const stretched = element.style.height;
      element.style.height = "auto";
      const measured = element.scrollHeight;
      element.style.height = stretched;
      return Math.max(measured, unwrapped);
    };
    const height = () => Math.min(contentHeight(), maxLines * LINE_PX + 8) + 2 * MARGIN;
    widget = node.addDOMWidget(name, className, element, {
      serialize: false, hideOnZoom: false, margin: MARGIN, getMinHeight: height, getMaxHeight: height,
    });
    widget.serialize = false;
    widget.element = element;
    widget.computeSize = (width) => [width, height()]; // older litegraph layouts ask this
  }
  widget.element.textContent = text;
  widget.element.title = text;
  const fit = () => {
    const width = node.size[0];
    const fitted = node.computeSize([width, node.size[1]])[1];
    node.setSize([width, growOnly ? Math.max(node.size[1], fitted) : fitted]);
    node.setDirtyCanvas?.(true, true);
  };
  fit();
  // A new element is put on the page a frame or more later (by the frontend's DOM widget
  // layer); until then its wrapped lines cannot be measured: fit again once it is there.
  let frames = 0;
  const refit = () => {
    if (widget.element.isConnected) fit();
    else if (++frames < 120) requestAnimationFrame(refit);
  };
  if (!widget.element.isConnected) requestAnimationFrame(refit);
  return widget;
}

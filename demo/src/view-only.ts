/**
 * A page opened with a view-only link: it shows everything live, and every
 * control that would change the session is disabled, saying why. The
 * bridge refuses a viewer's writes anyway (an AccessError naming the
 * editor role); disabling them first spares the viewer the attempt.
 *
 * Controls are disabled as the panels draw them (they redraw rows, lock
 * notices and drawers as the session changes), so this watches the page:
 * every input, select, text area and button in `root` is disabled unless
 * it only reads (marked `data-reads`, or a close button with an
 * `aria-label`).
 */

/** What a disabled control says when pointed at. */
export const VIEW_ONLY_REASON =
  "View-only link: changing this session needs an editor's link from its owner.";

const CONTROLS = "input, select, textarea, button";

/** Disables the writing controls of `root`, now and as they are drawn; returns the stop function. */
export function keepViewOnly(root: HTMLElement): () => void {
  const disable = (el: Element) => {
    if (
      !(
        el instanceof HTMLInputElement ||
        el instanceof HTMLSelectElement ||
        el instanceof HTMLTextAreaElement ||
        el instanceof HTMLButtonElement
      ) ||
      el.closest("[data-reads]") !== null ||
      (el instanceof HTMLButtonElement && el.hasAttribute("aria-label"))
    ) {
      return;
    }
    // Only when it changes: setting it again would notify the observer again.
    if (!el.disabled) el.disabled = true;
    if (el.title !== VIEW_ONLY_REASON) el.title = VIEW_ONLY_REASON;
    el.dataset.viewOnly = "";
  };
  const sweep = (node: Node) => {
    if (!(node instanceof Element)) return;
    if (node.matches(CONTROLS)) disable(node);
    for (const el of node.querySelectorAll(CONTROLS)) disable(el);
  };
  sweep(root);
  // Panels enable their controls again after an action, or redraw them.
  const observer = new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes") sweep(record.target);
      else for (const node of record.addedNodes) sweep(node);
    }
  });
  observer.observe(root, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ["disabled"],
  });
  return () => observer.disconnect();
}

// Counts the reruns the Streamlit server reports finished: every ForwardMsg carrying
// script_finished (field 6, a varint) that arrives on the page's WebSocket, in window.__lfssdRuns.
// Added to a browser context before the app opens its socket. Read off the wire, it cannot miss a
// rerun the way watching the page's script-state attribute can: a CPU-starved Chromium may take
// "running" and "not running" in one task, React renders once and the attribute never changes.
(() => {
  if (window.__lfssdRuns !== undefined) return;
  window.__lfssdRuns = 0;
  const varint = (bytes, i) => {
    let value = 0, shift = 0, byte;
    do { byte = bytes[i++]; value += (byte & 0x7f) * 2 ** shift; shift += 7; } while (byte & 0x80 && i < bytes.length);
    return [value, i];
  };
  const isScriptFinished = (data) => {  // the top-level fields of one ForwardMsg
    const bytes = new Uint8Array(data);
    let i = 0, tag, size;
    while (i < bytes.length) {
      [tag, i] = varint(bytes, i);
      const field = Math.floor(tag / 8), wire = tag & 7;
      if (wire === 0) { [size, i] = varint(bytes, i); if (field === 6) return true; }
      else if (wire === 2) { [size, i] = varint(bytes, i); i += size; }
      else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else return false;
    }
    return false;
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', event => {
        if (event.data instanceof ArrayBuffer && isScriptFinished(event.data)) window.__lfssdRuns += 1;
      });
    }
  };
})();

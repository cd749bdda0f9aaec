// The console's pages stay live and read well in the reader's zone. Without this file every
// page still works (reload to see what is new); with it:
// - times show as "3 min ago", the exact local time on hover;
// - the page follows the event stream and, when events are committed, reloads its #live region
//   from the server (the same HTML a reload would give), at most twice a second;
// - a page whose region also changes without an event (a delivery answered, retried or dead; a
//   label saved; a silence ending) says so with data-poll="<seconds>" and is reloaded that often
//   while it is visible;
// - no reload, for an event or a poll, replaces the region under the reader: not while the
//   pointer is over it, a keyboard's focus or a selection is in it (a new gate would push the
//   row the reader is about to click down, and the click would land on another gate's
//   button); a pointer left resting for a minute no longer holds it. A button in the corner
//   says updates are held, and shows them when pressed; the
//   page is brought up to date by itself once the reader leaves. Taps in the first 0.75 s
//   after the region changed are ignored (a touch screen has no pointer before the tap).
//   A reload that brings the HTML already shown changes nothing.
(function () {
  // "3 min ago", or "in 2 h" for a deadline still ahead.
  function ago(t) {
    const d = Math.round((Date.now() - t) / 1000);
    const s = Math.abs(d);
    if (s < 45) return d >= 0 ? 'just now' : 'in a moment';
    const m = Math.round(s / 60);
    const h = Math.round(m / 60);
    const span = m < 60 ? m + ' min' : h < 36 ? h + ' h' : Math.round(h / 24) + ' days';
    return d >= 0 ? span + ' ago' : 'in ' + span;
  }
  function times(root) {
    root.querySelectorAll('time[datetime]').forEach(function (el) {
      const t = Date.parse(el.getAttribute('datetime'));
      if (isNaN(t)) return;
      el.title = new Date(t).toLocaleString();
      el.textContent = ago(t);
    });
  }
  // The region as the server wrote it, before `times` rewrites it: a reload that brings the
  // same HTML leaves the page alone (focus, selection and scroll stay where they are).
  const live = document.getElementById('live');
  let shown = live ? live.innerHTML : null;
  times(document);
  setInterval(function () { times(document); }, 30000);

  if (!live || !window.fetch || !window.TextDecoder) return;
  let after = live.dataset.after || '0';
  let timer = null;
  let issued = 0;     // reloads started; only the latest one's answer is shown
  let inflight = 0;   // reloads not yet answered: a poll waits for them
  let polling = null;
  let inside = false;     // a pointer is over the region (a mouse resting there too)
  let movedAt = 0;        // when it last moved there: a pointer left resting for a minute
                          // (a wall display) stops holding the page
  let asked = false;      // "show them" was pressed: the next answer is shown whatever the reader does
  let pressed = false;
  let stale = false;      // a reload was held back for the reader: done once they leave
  let swappedAt = 0;      // when the region was last replaced
  live.addEventListener('pointerenter', function () { inside = true; movedAt = Date.now(); });
  live.addEventListener('pointermove', function () { movedAt = Date.now(); });
  let tapped = false;      // the last press in the region was a finger or a pen, not a mouse
  live.addEventListener('pointerdown', function (e) { inside = true; pressed = true; tapped = e.pointerType === 'touch' || e.pointerType === 'pen'; });
  document.addEventListener('pointerup', function () { pressed = false; });
  live.addEventListener('pointerleave', function () { inside = false; pressed = false; catchUp(); });
  live.addEventListener('focusout', function () { setTimeout(catchUp, 0); });
  document.addEventListener('selectionchange', function () { if (stale) catchUp(); });
  // A tap meant for what was there a moment ago must not land on what replaced it: a touch
  // screen has no pointer over the region before the finger comes down. (A mouse is over the
  // region before it clicks, which holds reloads back.)
  live.addEventListener('click', function (e) {
    if (tapped && Date.now() - swappedAt < 750) { e.preventDefault(); e.stopPropagation(); }
  }, true);
  // Fixed in a corner, so showing it moves nothing on the page.
  const held = document.createElement('button');
  held.type = 'button';
  held.className = 'held';
  held.hidden = true;
  held.textContent = 'New updates: show them';
  held.addEventListener('click', function () { held.hidden = true; stale = false; asked = true; refresh(); });
  document.body.appendChild(held);
  function setStale(value) {
    stale = value;
    held.hidden = !value;
  }
  // Focus counts when it came from the keyboard: a button clicked with the mouse keeps focus
  // after the pointer has gone, and would hold the page for good.
  function keyboardFocusIn() {
    const focused = document.activeElement;
    if (!focused || focused === document.body || !live.contains(focused)) return false;
    try { return focused.matches(':focus-visible'); } catch (e) { return true; }
  }
  // The reader is in the region: the pointer over it or pressed, the keyboard's focus in it,
  // or text selected in it.
  function busy() {
    if (pressed || (inside && Date.now() - movedAt < 60000) || keyboardFocusIn()) return true;
    const selection = window.getSelection && window.getSelection();
    return !!(selection && !selection.isCollapsed && selection.rangeCount && live.contains(selection.getRangeAt(0).commonAncestorContainer));
  }
  // A reload held back for the reader is done (anew: what it brought may be old by now) as
  // soon as they are out of the region.
  function catchUp() {
    if (stale && !busy() && !timer && !inflight) { setStale(false); refresh(); }
  }
  setInterval(catchUp, 1000);
  function refresh() {
    timer = null;
    const n = ++issued;
    inflight++;
    fetch(location.href, { credentials: 'same-origin' }).then(function (r) {
      // Signed out (sent to /login) or no longer allowed: stop polling; the page is not live.
      if (r.redirected || r.status === 401 || r.status === 403) { stopPolling(); return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (!html || n !== issued) return;
      const fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('live');
      if (!fresh) { stopPolling(); return; }
      if (fresh.innerHTML === shown) { asked = false; setStale(false); return; }
      if (busy() && !asked) { setStale(true); return; }
      asked = false;
      setStale(false);
      swappedAt = Date.now();
      const scrolled = Array.prototype.map.call(live.querySelectorAll('.scroll'), function (el) { return el.scrollLeft; });
      shown = fresh.innerHTML;
      live.innerHTML = shown;
      live.querySelectorAll('.scroll').forEach(function (el, i) { if (scrolled[i]) el.scrollLeft = scrolled[i]; });
      times(live);
    }).catch(function () {}).then(function () { inflight--; });
  }
  function stopPolling() {
    if (polling) clearInterval(polling);
    polling = null;
  }
  // The API's SSE stream, read with fetch so that every event type counts (EventSource only
  // delivers the types it was told to listen for); reconnects from the last id it saw.
  function follow() {
    fetch('/v1/events/stream?after=' + after, { credentials: 'same-origin' }).then(function (response) {
      // Not allowed to read events (or signed out): this page is simply not live.
      if (response.status === 401 || response.status === 403) return;
      if (!response.ok || !response.body) throw new Error('stream ' + response.status);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let partial = '';
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) throw new Error('stream ended');
          // Whole lines only: an id cut at the end of a read would move `after` backwards.
          const lines = (partial + decoder.decode(chunk.value, { stream: true })).split('\n');
          partial = lines.pop();
          let seen = false;
          lines.forEach(function (line) {
            const m = line.match(/^id: (\d+)$/);
            if (m) { after = m[1]; seen = true; }
          });
          if (seen && !timer) timer = setTimeout(function () { refresh(); }, 500);
          return pump();
        });
      }
      return pump();
    }).catch(function () { setTimeout(follow, 3000); });
  }
  follow();

  const poll = Number(live.dataset.poll);
  if (poll > 0) {
    polling = setInterval(function () {
      if (timer || inflight || document.hidden) return;
      refresh();
    }, poll * 1000);
  }
})();

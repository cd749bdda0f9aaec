// Keyboard, fast item switching and span selection for /annotate. The page works without it:
// every action is a plain form post followed by the next page. With it:
// - keys: 1–9 labels, Enter saves, s skips, u undoes (also on the "nothing left" page);
// - a label is posted in the background and the next item is swapped in place (no page
//   load); classification keys pressed meanwhile wait in a queue, each for the item after the
//   one before it, so fast hands never label the wrong item; the queue is shown;
// - a text selection plus a number makes a span; spans show highlighted in the text, at the
//   stored text's UTF-16 offsets whatever its line breaks.
(function () {
  const queue = [];          // keys pressed while a post was in flight, oldest first
  let busy = false;
  let pressedAt = null;      // when the key being served was pressed (for __annotateTimings)
  window.__annotateTimings = [];
  let state = null;

  function typingIn(target) { return target.matches && target.matches('input[type=text], textarea'); }

  // What the current item's page offers; rebuilt after every swap.
  function bind() {
    const form = document.getElementById('label-form');
    const text = document.getElementById('item-text');
    const spans = document.getElementById('spans');
    state = {
      form: form,
      undoForm: form || (document.querySelector('button[value=undo]') || {}).form || null,
      task: form ? form.dataset.task : null,
      text: text,
      spans: spans,
      list: document.getElementById('span-list'),
      labels: spans ? spans.dataset.labels.split('|').filter(Boolean) : [],
      // The text as stored. The HTML parser turned its CRLFs into LFs; it is put back exactly
      // as stored before anyone selects in it, so selection offsets are the stored offsets.
      source: text && text.dataset.source ? JSON.parse(text.dataset.source) : (text ? text.textContent : ''),
    };
    if (state.spans) { state.spans.addEventListener('input', render); }
    render();
    showQueue();
  }

  function showQueue() {
    let note = document.getElementById('queued');
    if (!note) {
      const main = document.querySelector('main');
      if (!main) return;
      note = document.createElement('p');
      note.id = 'queued';
      note.className = 'meta';
      note.setAttribute('aria-live', 'polite');
      main.insertBefore(note, main.firstChild.nextSibling);
    }
    note.textContent = queue.length ? queue.length + (queue.length === 1 ? ' key waits' : ' keys wait') + ' for the next item…' : '';
  }

  function parse() {
    if (!state.spans || !state.spans.value.trim()) return [];
    return state.spans.value.split(',').map(function (p) {
      const m = p.trim().match(/^(\d+)-(\d+):(.+)$/);
      return m ? { start: +m[1], end: +m[2], label: m[3].trim() } : null;
    }).filter(Boolean);
  }

  // The stored text with each valid span as a <mark> (an overlapping one is listed only).
  function paint(all) {
    const text = state.text;
    if (!text || !text.dataset.source) return;
    const source = state.source;
    const shown = all.filter(function (s) { return s.start < s.end && s.end <= source.length; })
      .sort(function (a, b) { return a.start - b.start; });
    text.textContent = '';
    let at = 0;
    shown.forEach(function (s) {
      if (s.start < at) return;
      text.appendChild(document.createTextNode(source.slice(at, s.start)));
      const mark = document.createElement('mark');
      mark.dataset.label = s.label;
      mark.title = s.label + ' (' + s.start + '–' + s.end + ')';
      mark.textContent = source.slice(s.start, s.end);
      text.appendChild(mark);
      at = s.end;
    });
    text.appendChild(document.createTextNode(source.slice(at)));
  }

  function render() {
    const all = parse();
    paint(all);
    if (!state.list) return;
    state.list.textContent = '';
    all.forEach(function (s) {
      const li = document.createElement('li');
      li.textContent = s.label + ': “' + state.source.slice(s.start, s.end) + '” (' + s.start + '–' + s.end + ')';
      state.list.appendChild(li);
    });
  }

  function addSpan(index) {
    const selection = window.getSelection();
    if (!selection.rangeCount || selection.isCollapsed || !state.labels[index]) return;
    const range = selection.getRangeAt(0);
    if (!state.text.contains(range.startContainer) || !state.text.contains(range.endContainer)) return;
    const before = range.cloneRange();
    before.selectNodeContents(state.text);
    before.setEnd(range.startContainer, range.startOffset);
    const start = before.toString().length;
    const end = start + range.toString().length;
    const all = parse().concat([{ start: start, end: end, label: state.labels[index] }]);
    state.spans.value = all.map(function (s) { return s.start + '-' + s.end + ':' + s.label; }).join(', ');
    selection.removeAllRanges();
    render();
  }

  // Posts the form in the background and swaps the page it answers with (the next item) in
  // place. Any failure falls back to the plain form post.
  function send(form, extra) {
    const data = new URLSearchParams(new FormData(form));
    extra.forEach(function (pair) { data.append(pair[0], pair[1]); });
    busy = true;
    // getAttribute: form.action would be the form's own inputs named "action".
    fetch(form.getAttribute('action'), { method: 'POST', body: data, credentials: 'same-origin' }).then(function (response) {
      return response.text().then(function (html) {
        const doc = new DOMParser().parseFromString(html, 'text/html');
        const main = doc.querySelector('main');
        if (!main) throw new Error('no page');
        document.querySelector('main').replaceWith(document.importNode(main, true));
        document.title = doc.title;
        if (response.redirected) history.replaceState(null, '', response.url);
        bind();
        if (pressedAt !== null) window.__annotateTimings.push(performance.now() - pressedAt);
      });
    }).then(function () {
      busy = false;
      pressedAt = null;
      drain();
    }, function () {
      // The plain post, with what the key or button added (the page then loads as without
      // this script).
      busy = false;
      extra.forEach(function (pair) {
        const input = document.createElement('input');
        input.type = 'hidden';
        input.name = pair[0];
        input.value = pair[1];
        form.appendChild(input);
      });
      HTMLFormElement.prototype.submit.call(form);
    });
  }

  // Queued keys, oldest first, until one of them posts (the rest wait for its next item).
  function drain() {
    while (!busy && queue.length) {
      const next = queue.shift();
      pressedAt = next.at;
      act(next.key);
      if (!busy) pressedAt = null;
    }
    showQueue();
  }

  // One key against the item on screen; true when it was a key of ours.
  function act(key) {
    const s = state;
    if (!s.form) {
      if (key === 'u' && s.undoForm) { send(s.undoForm, [['action', 'undo']]); return true; }
      return false;
    }
    if (key === 'Enter' && s.task !== 'classification') { send(s.form, [['action', 'label']]); return true; }
    if (key >= '1' && key <= '9') {
      const i = +key - 1;
      if (s.task === 'classification') {
        const button = s.form.querySelectorAll('button[name=label]')[i];
        if (button) send(s.form, [['label', button.value]]);
      } else if (s.task === 'multilabel') {
        const box = s.form.querySelectorAll('input[name=labels]')[i];
        if (box) box.checked = !box.checked;
      } else if (s.task === 'spans') {
        addSpan(i);
      }
      return true;
    }
    if (key === 's') { send(s.form, [['action', 'skip']]); return true; }
    if (key === 'u') { send(s.form, [['action', 'undo']]); return true; }
    return false;
  }

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || !state) return;
    const ours = e.key === 'Enter' || e.key === 's' || e.key === 'u' || (e.key >= '1' && e.key <= '9');
    if (!ours) return;
    if (typingIn(e.target) && e.key !== 'Enter') return;
    if (e.key === 'Enter' && (!state.form || state.task === 'classification')) return;
    e.preventDefault();
    const at = performance.now();
    if (busy) {
      // Only a classification key is a whole answer for one item, so only those queue (each
      // for the item after the one before). A toggle, a span or a second Enter meant for the
      // item on screen would land on one nobody has seen: dropped.
      if (state.task !== 'classification') return;
      queue.push({ key: e.key, at: at });
      showQueue();
      return;
    }
    pressedAt = at;
    if (!act(e.key) || !busy) pressedAt = null;
  });

  // Buttons clicked: the same background post (ignored while one is in flight).
  document.addEventListener('submit', function (e) {
    const form = e.target;
    if (!form.matches('main form[action^="/annotate/"]')) return;
    e.preventDefault();
    if (busy) return;
    const submitter = e.submitter;
    send(form, submitter && submitter.name ? [[submitter.name, submitter.value]] : []);
  });

  bind();
})();

// Keyboard and span selection for /annotate. The page works without it: every action is a
// plain form button; this only adds shortcuts (1–9 labels, Enter save, s skip, u undo), turns a
// text selection plus a number into a span, and highlights the spans in the text.
(function () {
  function typingIn(target) { return target.matches && target.matches('input[type=text], textarea'); }

  const form = document.getElementById('label-form');
  if (!form) {
    // "Nothing left" still offers Undo: `u` reaches it too.
    document.addEventListener('keydown', function (e) {
      if (e.key !== 'u' || e.ctrlKey || e.metaKey || e.altKey || typingIn(e.target)) return;
      const undo = document.querySelector('button[value=undo]');
      if (undo) { e.preventDefault(); undo.click(); }
    });
    return;
  }
  const task = form.dataset.task;
  const text = document.getElementById('item-text');
  const spans = document.getElementById('spans');
  const list = document.getElementById('span-list');
  const labels = spans ? spans.dataset.labels.split('|').filter(Boolean) : [];
  // The text as stored. The HTML parser turned its CRLFs into LFs; offsets are the stored
  // text's (UTF-16), so the text is put back exactly as stored before anyone selects in it.
  const source = text && text.dataset.source ? JSON.parse(text.dataset.source) : (text ? text.textContent : '');

  function click(selector) { const b = form.querySelector(selector); if (b) b.click(); }

  function parse() {
    if (!spans || !spans.value.trim()) return [];
    return spans.value.split(',').map(function (p) {
      const m = p.trim().match(/^(\d+)-(\d+):(.+)$/);
      return m ? { start: +m[1], end: +m[2], label: m[3].trim() } : null;
    }).filter(Boolean);
  }

  // The stored text again, with each valid span as a <mark> (an overlapping one is listed
  // but not highlighted). Text nodes hold the stored characters, so a selection's offsets are
  // the stored offsets.
  function paint(all) {
    if (!text || !text.dataset.source) return;
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
    if (!list) return;
    list.textContent = '';
    all.forEach(function (s) {
      const li = document.createElement('li');
      li.textContent = s.label + ': “' + source.slice(s.start, s.end) + '” (' + s.start + '–' + s.end + ')';
      list.appendChild(li);
    });
  }

  function addSpan(index) {
    const selection = window.getSelection();
    if (!selection.rangeCount || selection.isCollapsed || !labels[index]) return;
    const range = selection.getRangeAt(0);
    if (!text.contains(range.startContainer) || !text.contains(range.endContainer)) return;
    const before = range.cloneRange();
    before.selectNodeContents(text);
    before.setEnd(range.startContainer, range.startOffset);
    const start = before.toString().length; // UTF-16 offsets into the stored text
    const end = start + range.toString().length;
    const all = parse().concat([{ start: start, end: end, label: labels[index] }]);
    spans.value = all.map(function (s) { return s.start + '-' + s.end + ':' + s.label; }).join(', ');
    selection.removeAllRanges();
    render();
  }

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = typingIn(e.target);
    if (e.key === 'Enter' && task !== 'classification') { e.preventDefault(); click('button[value=label]'); return; }
    if (typing) return;
    if (e.key >= '1' && e.key <= '9') {
      const i = +e.key - 1;
      if (task === 'classification') click('button[name=label]:nth-of-type(' + (i + 1) + ')');
      else if (task === 'multilabel') { const c = form.querySelectorAll('input[name=labels]')[i]; if (c) c.checked = !c.checked; }
      else if (task === 'spans') addSpan(i);
      e.preventDefault();
    } else if (e.key === 's') { e.preventDefault(); click('button[value=skip]'); }
    else if (e.key === 'u') { e.preventDefault(); click('button[value=undo]'); }
  });
  if (spans) { spans.addEventListener('input', render); render(); } else { paint([]); }
})();

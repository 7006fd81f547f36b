/**
 * A small, safe Markdown renderer for model answers (docs/web.md).
 *
 * It never parses HTML and never assigns markup: the input is split into blocks and inline pieces, and
 * every piece of text becomes a DOM text node, so `<script>` or `<img src=x onerror=…>` in an answer or
 * a document is shown as the characters it is. Only this whitelist becomes elements: paragraphs and line
 * breaks, emphasis (*em*, _em_, **strong**, __strong__), inline code and fenced code blocks, bulleted and
 * numbered lists, links whose address is http(s) (opened in a new tab, without referrer), and citation
 * markers [n] naming a source the caller knows (a button; see `cite`).
 */

const FENCE = /^\s{0,3}(`{3,}|~{3,})/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/;
const INDENTED = /^\s+\S/;
// Earliest match wins; at one position the alternatives are tried in this order.
const INLINE = new RegExp(
  [
    '(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)', // 1, 2: code span
    '\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*', // 3: strong
    '(?<!\\w)__(?=\\S)([\\s\\S]*?\\S)__(?!\\w)', // 4: strong
    '\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*(?!\\*)', // 5: emphasis
    '(?<!\\w)_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?!\\w)', // 6: emphasis
    '\\[([^\\[\\]\\n]+)\\]\\(\\s*<?([^\\s()<>]+)>?\\s*\\)', // 7, 8: link
    '\\[(\\d{1,4}(?:\\s*,\\s*\\d{1,4})*)\\]', // 9: citation markers
    '(https?:\\/\\/[^\\s<>"\'\\[\\]()]*[^\\s<>"\'\\[\\]().,;:!?])', // 10: bare address
  ].join('|'),
  'g',
);
const MAX_DEPTH = 6;

function element(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/** `raw` as an absolute http(s) address, or null (javascript:, data:, relative… are refused). */
export function safeUrl(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * The inline pieces of `text`, appended to `parent`.
 * options.cite(n) → a label for source n (it becomes a button), or null (the marker stays text).
 */
function inline(text, parent, options, depth = 0) {
  if (depth > MAX_DEPTH) {
    parent.append(text);
    return;
  }
  let at = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > at) parent.append(text.slice(at, match.index));
    at = match.index + match[0].length;
    const [whole, , code, strong1, strong2, em1, em2, label, href, markers, bare] = match;
    if (code !== undefined) {
      const node = element('code');
      node.textContent = /^ .* $/s.test(code) && code.trim() ? code.slice(1, -1) : code;
      parent.append(node);
    } else if (strong1 !== undefined || strong2 !== undefined) {
      const node = element('strong');
      inline(strong1 ?? strong2, node, options, depth + 1);
      parent.append(node);
    } else if (em1 !== undefined || em2 !== undefined) {
      const node = element('em');
      inline(em1 ?? em2, node, options, depth + 1);
      parent.append(node);
    } else if (label !== undefined) {
      const url = safeUrl(href);
      if (url === null || options.inLink) {
        parent.append(whole);
      } else {
        parent.append(link(url, (node) => inline(label, node, { ...options, inLink: true }, depth + 1)));
      }
    } else if (markers !== undefined) {
      citations(markers, whole, parent, options);
    } else if (bare !== undefined) {
      const url = safeUrl(bare);
      parent.append(url === null || options.inLink ? bare : link(url, (node) => node.append(bare)));
    }
  }
  if (at < text.length) parent.append(text.slice(at));
}

function link(url, fill) {
  const node = element('a');
  node.href = url;
  node.target = '_blank';
  node.rel = 'noopener noreferrer nofollow';
  fill(node);
  return node;
}

function citations(markers, whole, parent, options) {
  const numbers = markers.split(',').map((part) => Number(part.trim()));
  const labels = numbers.map((n) => (options.cite ? options.cite(n) : null));
  if (labels.some((label) => label === null || label === undefined)) {
    parent.append(whole);
    return;
  }
  numbers.forEach((n, index) => {
    const button = element('button', 'cite');
    button.type = 'button';
    button.dataset.source = String(n);
    button.textContent = `[${n}]`;
    button.setAttribute('aria-label', labels[index]);
    button.title = labels[index];
    parent.append(button);
  });
}

/** Lines of one paragraph or list item: inline Markdown, a line break between lines. */
function lines(texts, parent, options) {
  texts.forEach((text, index) => {
    if (index > 0) parent.append(element('br'));
    inline(text, parent, options);
  });
}

/** `source` rendered as a DocumentFragment; see the module comment for what is recognised. */
export function renderMarkdown(source, options = {}) {
  const fragment = document.createDocumentFragment();
  const all = String(source ?? '').replace(/\r\n?/g, '\n').split('\n');
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) {
      const node = element('p');
      lines(paragraph, node, options);
      fragment.append(node);
      paragraph = [];
    }
  };
  let i = 0;
  while (i < all.length) {
    const line = all[i];
    const fence = FENCE.exec(line);
    if (fence) {
      flush();
      const body = [];
      i += 1;
      while (i < all.length && !all[i].trimStart().startsWith(fence[1])) {
        body.push(all[i]);
        i += 1;
      }
      i += 1; // the closing fence (an unclosed block runs to the end, as while it streams)
      const pre = element('pre');
      const code = element('code');
      code.textContent = body.join('\n');
      pre.append(code);
      fragment.append(pre);
      continue;
    }
    if (!line.trim()) {
      flush();
      i += 1;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      flush();
      const node = element('p', 'md-heading');
      const strong = element('strong');
      inline(heading[1], strong, options);
      node.append(strong);
      fragment.append(node);
      i += 1;
      continue;
    }
    const bullet = BULLET.exec(line);
    const ordered = bullet ? null : ORDERED.exec(line);
    if (bullet || ordered) {
      flush();
      const pattern = bullet ? BULLET : ORDERED;
      const list = element(bullet ? 'ul' : 'ol');
      if (ordered && Number(ordered[1]) !== 1) list.start = Number(ordered[1]);
      const items = [];
      while (i < all.length) {
        const found = pattern.exec(all[i]);
        if (found) {
          items.push([found[bullet ? 1 : 2]]);
        } else if (INDENTED.test(all[i]) && !FENCE.test(all[i])) {
          items[items.length - 1].push(all[i].trim());
        } else {
          break;
        }
        i += 1;
      }
      for (const item of items) {
        const node = element('li');
        lines(item, node, options);
        list.append(node);
      }
      fragment.append(list);
      continue;
    }
    paragraph.push(line);
    i += 1;
  }
  flush();
  return fragment;
}

/** Plain text (a document's passage) as paragraphs of text nodes: nothing in it is interpreted. */
export function renderPlain(source) {
  const fragment = document.createDocumentFragment();
  for (const block of String(source ?? '').replace(/\r\n?/g, '\n').split(/\n\s*\n/)) {
    if (!block.trim()) continue;
    const node = element('p');
    node.textContent = block;
    fragment.append(node);
  }
  return fragment;
}

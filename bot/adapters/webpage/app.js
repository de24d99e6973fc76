/* Team bot web chat: plain JavaScript, no build step, no external resources.
 * The websocket and upload protocol is documented at the top of bot/adapters/web.py.
 * Server text is never inserted as HTML without escaping it first (see renderMarkdown).
 */
"use strict";

// -- UI strings (English and Chinese, chosen from navigator.language) --------------------
const STRINGS = {
  en: {
    title: "Team bot",
    conversation: "Conversation",
    status_connecting: "Connecting…",
    status_online: "Online",
    status_reconnecting: "Reconnecting…",
    status_offline: "Offline",
    reconnect_in: "Connection lost. Reconnecting in {s} s…",
    reconnect_now: "Connection lost. Reconnecting…",
    offline: "You're offline. Messages will be sent when the connection is back.",
    retry_now: "Retry now",
    composer_label: "Message",
    placeholder: "Message the bot — type / for commands",
    footnote: "Enter to send · Shift+Enter for a new line · / for commands",
    send: "Send",
    attach: "Attach a file",
    remove_file: "Remove {name}",
    uploading: "Uploading… {percent}%",
    ready: "Ready",
    upload_failed: "Couldn't upload {name}. Please try again.",
    too_large: "{name} is larger than the {limit} limit.",
    drop_here: "Drop files to attach",
    commands: "Commands",
    no_match: "No command matches “/{query}”",
    admin: "admin",
    usage: "Usage",
    required: "required",
    typing: "The bot is typing",
    copy: "Copy",
    copied: "Copied",
    download: "Download",
    done: "Done",
    working: "Working…",
    jump_latest: "New messages ↓",
    empty_title: "Say hello",
    empty_hint: "Ask something, attach a file, or type / to see the commands.",
    queued: "Will be sent when the connection is back",
    error: "Error",
    you: "You",
    bot: "Bot",
    unread: "({n}) ",
  },
  zh: {
    title: "团队机器人",
    conversation: "对话",
    status_connecting: "正在连接…",
    status_online: "在线",
    status_reconnecting: "正在重新连接…",
    status_offline: "离线",
    reconnect_in: "连接已断开，{s} 秒后重新连接…",
    reconnect_now: "连接已断开，正在重新连接…",
    offline: "你已离线。连接恢复后会自动发送消息。",
    retry_now: "立即重试",
    composer_label: "消息",
    placeholder: "给机器人发消息 — 输入 / 查看命令",
    footnote: "Enter 发送 · Shift+Enter 换行 · / 查看命令",
    send: "发送",
    attach: "添加附件",
    remove_file: "移除 {name}",
    uploading: "正在上传… {percent}%",
    ready: "已就绪",
    upload_failed: "无法上传 {name}，请重试。",
    too_large: "{name} 超过了 {limit} 的大小限制。",
    drop_here: "松开即可添加附件",
    commands: "命令",
    no_match: "没有匹配“/{query}”的命令",
    admin: "管理员",
    usage: "用法",
    required: "必填",
    typing: "机器人正在输入",
    copy: "复制",
    copied: "已复制",
    download: "下载",
    done: "完成",
    working: "处理中…",
    jump_latest: "新消息 ↓",
    empty_title: "打个招呼吧",
    empty_hint: "问点什么、添加附件，或输入 / 查看命令。",
    queued: "连接恢复后发送",
    error: "错误",
    you: "你",
    bot: "机器人",
    unread: "（{n}）",
  },
};

(function main() {
  const LOCALE = navigator.language || "en";
  const LANG = LOCALE.toLowerCase().startsWith("zh") ? "zh" : "en";
  const VISITOR_KEY = "teambot.visitor";

  function tr(key, params) {
    const s = STRINGS[LANG][key] ?? STRINGS.en[key] ?? key;
    return params ? s.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m)) : s;
  }

  // -- small helpers ---------------------------------------------------------------------
  function uid() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b); // works on plain http too, unlike crypto.randomUUID
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function fmtSize(n) {
    const units = ["B", "KB", "MB", "GB"];
    let v = Number(n) || 0;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return i === 0 ? `${v} ${units[i]}` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
  }

  function fmtTime(d) {
    return d.toLocaleTimeString(LOCALE, { hour: "2-digit", minute: "2-digit" });
  }

  // -- safe markdown-lite -----------------------------------------------------------------
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  }

  /** The URL if it is safe to link to (http, https, mailto, or a same-site path), else null. */
  function safeUrl(raw) {
    const u = String(raw || "").trim();
    if (/^(https?:\/\/|mailto:)[^\s]+$/i.test(u) || /^\/(?![/\\])[^\s]*$/.test(u)) return u;
    return null;
  }

  function linkHtml(url, labelHtml) {
    return `<a href="${escapeHtml(url)}" target="_blank" rel="noopener noreferrer">${labelHtml}</a>`;
  }

  function emphasis(html) {
    // Runs on already-escaped text; * _ ~ are never produced by escaping.
    return html
      .replace(/\*\*(?=\S)([^*\n]*?\S)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])/g, "$1<strong>$2</strong>")
      .replace(/(^|[^\w])_(?=\S)([^_\n]*?\S)_(?!\w)/g, "$1<em>$2</em>")
      .replace(/(^|[^\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])/g, "$1<del>$2</del>");
  }

  function renderInline(text) {
    const slots = [];
    const hold = (html) => `\u0000${slots.push(html) - 1}\u0000`;
    let s = String(text).replace(/\u0000/g, "");
    s = s.replace(/`([^`\n]+)`/g, (_, code) => hold(`<code>${escapeHtml(code)}</code>`));
    s = s.replace(/\[([^\]\n]+)\]\(([^()\s]+)\)/g, (m, label, url) => {
      const u = safeUrl(url);
      return u ? hold(linkHtml(u, emphasis(escapeHtml(label)))) : m;
    });
    s = s.replace(/<((?:https?:\/\/|mailto:)[^|>\s]+)(?:\|([^>\n]+))?>/g, (m, url, label) => {
      const u = safeUrl(url);
      return u ? hold(linkHtml(u, escapeHtml(label || url))) : m;
    });
    s = s.replace(/\bhttps?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]]/g, (url) => hold(linkHtml(url, escapeHtml(url))));
    s = emphasis(escapeHtml(s)).replace(/\n/g, "<br>");
    for (let i = 0; i < 4 && s.includes("\u0000"); i++) {
      s = s.replace(/\u0000(\d+)\u0000/g, (_, n) => slots[Number(n)] ?? "");
    }
    return s;
  }

  /** Escape first, then ``` fences, `code`, *bold*, _italic_, ~strike~, links and line breaks. */
  function renderMarkdown(text) {
    const parts = String(text ?? "").split("```");
    return parts
      .map((part, i) => {
        if (i % 2 === 0) {
          let p = part;
          if (i > 0) p = p.replace(/^[^\S\n]*\n/, "");
          if (i < parts.length - 1) p = p.replace(/\n[^\S\n]*$/, "");
          return renderInline(p);
        }
        let lang = "";
        let code = part;
        const m = /^([\w+#.-]*)[^\S\n]*\n/.exec(part);
        if (m) {
          lang = m[1];
          code = part.slice(m[0].length);
        }
        code = code.replace(/\n$/, "");
        const langAttr = lang ? ` data-lang="${escapeHtml(lang)}"` : "";
        return `<pre class="code"${langAttr}><code>${escapeHtml(code)}</code></pre>`;
      })
      .join("");
  }

  // -- DOM ---------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const root = document.documentElement;
  const list = $("messages");
  const empty = $("empty");
  const composer = $("composer");
  const form = $("form");
  const sendBtn = $("send");
  const attachBtn = $("attach");
  const fileInput = $("file-input");
  const chipsBox = $("chips");
  const popup = $("autocomplete");
  const hint = $("hint");
  const connEl = $("conn");
  const connText = $("conn-text");
  const banner = $("banner");
  const bannerText = $("banner-text");
  const retryBtn = $("retry");
  const jumpBtn = $("jump");
  const dropzone = $("dropzone");

  function applyI18n() {
    root.lang = LANG === "zh" ? "zh-CN" : "en";
    document.title = tr("title");
    for (const n of document.querySelectorAll("[data-i18n]")) n.textContent = tr(n.dataset.i18n);
    for (const n of document.querySelectorAll("[data-i18n-aria]")) n.setAttribute("aria-label", tr(n.dataset.i18nAria));
    for (const n of document.querySelectorAll("[data-i18n-title]")) n.title = tr(n.dataset.i18nTitle);
    for (const n of document.querySelectorAll("[data-i18n-placeholder]")) n.placeholder = tr(n.dataset.i18nPlaceholder);
  }

  // -- message list ------------------------------------------------------------------------
  const byId = new Map(); // server message id -> row
  const progressById = new Map();
  let typingRow = null;
  const awaiting = new Map(); // client id -> timeout
  let unread = 0;

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 96;
  }

  function scrollToBottom(smooth) {
    list.scrollTo({ top: list.scrollHeight, behavior: smooth ? "smooth" : "auto" });
    jumpBtn.hidden = true;
  }

  function append(row, { mine = false } = {}) {
    const stick = mine || nearBottom();
    empty.hidden = true;
    if (typingRow && typingRow.parentNode) list.insertBefore(row, typingRow);
    else list.append(row);
    if (stick) scrollToBottom(false);
    else jumpBtn.hidden = false;
    if (!mine && document.hidden) {
      unread++;
      document.title = tr("unread", { n: unread }) + tr("title");
    }
    return row;
  }

  function keepBottom(fn) {
    const stick = nearBottom();
    fn();
    if (stick) scrollToBottom(false);
  }

  function botRow(kind, testid) {
    const bubble = el("div", { class: "bubble" });
    const row = el(
      "div",
      {
        class: `row bot ${kind || ""}`.trim(),
        "data-testid": testid || "bot-message",
        role: "article",
        "aria-label": tr("bot"),
        title: fmtTime(new Date()),
      },
      el("div", { class: "avatar", "aria-hidden": "true" }),
      bubble,
    );
    row.bubble = bubble;
    return row;
  }

  function setRichText(container, text) {
    container.innerHTML = renderMarkdown(text); // escaped by renderMarkdown
    for (const pre of container.querySelectorAll("pre.code")) {
      const btn = el("button", { type: "button", class: "copy", text: tr("copy"), "aria-label": tr("copy") });
      btn.addEventListener("click", () => copyText(pre.querySelector("code").textContent, btn));
      pre.append(btn);
    }
  }

  async function copyText(text, btn) {
    try {
      if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
      else {
        const ta = el("textarea", { class: "offscreen", readonly: true });
        ta.value = text;
        document.body.append(ta);
        ta.select();
        document.execCommand("copy");
        ta.remove();
      }
      btn.textContent = tr("copied");
      setTimeout(() => (btn.textContent = tr("copy")), 1500);
    } catch {
      /* clipboard refused; nothing to do */
    }
  }

  function renderButtons(container, buttons) {
    container.querySelector(":scope > .buttons")?.remove();
    if (!Array.isArray(buttons) || !buttons.length) return;
    const group = el("div", { class: "buttons", role: "group" });
    for (const b of buttons) {
      if (!b || typeof b !== "object") continue;
      const style = ["primary", "danger"].includes(b.style) ? ` ${b.style}` : "";
      const btn = el("button", {
        type: "button",
        class: `action${style}`,
        text: String(b.label ?? b.value ?? ""),
        "data-action": String(b.action_id ?? ""),
        "data-value": String(b.value ?? ""),
      });
      btn.addEventListener("click", () => clickAction(btn, b));
      group.append(btn);
    }
    container.append(group);
  }

  function addBotMessage(f) {
    const existing = f.id ? byId.get(String(f.id)) : null;
    if (existing) return editMessage(f);
    const row = botRow("");
    const text = el("div", { class: "text" });
    setRichText(text, f.text || "");
    row.bubble.append(text);
    renderButtons(row.bubble, f.buttons);
    if (f.id) byId.set(String(f.id), row);
    append(row);
  }

  function editMessage(f) {
    const row = byId.get(String(f.id));
    if (!row) return addBotMessage({ ...f, type: "message" });
    keepBottom(() => {
      let text = row.bubble.querySelector(":scope > .text");
      if (!text) {
        text = el("div", { class: "text" });
        row.bubble.prepend(text);
      }
      setRichText(text, f.text || "");
      if (Array.isArray(f.buttons)) renderButtons(row.bubble, f.buttons);
    });
  }

  function addError(text) {
    const row = botRow("error", "error-message");
    row.setAttribute("role", "alert");
    row.setAttribute("aria-label", tr("error"));
    row.bubble.append(
      el("span", { class: "error-icon", "aria-hidden": "true", text: "!" }),
      (() => {
        const t = el("div", { class: "text" });
        setRichText(t, text || tr("error"));
        return t;
      })(),
    );
    append(row);
  }

  function mediaFor(mime, url, name) {
    if (mime.startsWith("image/")) {
      const img = el("img", { src: url, alt: name, loading: "lazy", decoding: "async" });
      img.addEventListener("load", () => keepBottom(() => {}), { once: true });
      return el("a", { class: "media image", href: url, target: "_blank", rel: "noopener" }, img);
    }
    if (mime.startsWith("audio/")) return el("audio", { class: "media", controls: true, preload: "metadata", src: url });
    if (mime.startsWith("video/")) {
      return el("video", { class: "media", controls: true, preload: "metadata", playsinline: true, src: url });
    }
    return null;
  }

  function addFile(f) {
    const url = safeUrl(f.url);
    const mime = String(f.mime || "").toLowerCase();
    const name = String(f.name || "file");
    const row = botRow("file");
    row.dataset.kind = "file";
    if (url) {
      const media = mediaFor(mime, url, name);
      if (media) row.bubble.append(media);
      row.bubble.append(
        el(
          "a",
          { class: "file-link", href: url, download: name, "aria-label": `${tr("download")} ${name}` },
          el("span", { class: "file-icon", "aria-hidden": "true", text: extOf(name) }),
          el("span", { class: "file-name", text: name }),
          el("span", { class: "file-dl", text: tr("download") }),
        ),
      );
    } else {
      row.bubble.append(el("div", { class: "file-link", text: name }));
    }
    if (f.caption) {
      const cap = el("div", { class: "text caption" });
      setRichText(cap, f.caption);
      row.bubble.append(cap);
    }
    renderButtons(row.bubble, f.buttons);
    if (f.id) byId.set(String(f.id), row);
    append(row);
  }

  function extOf(name) {
    const m = /\.([a-z0-9]{1,4})$/i.exec(name);
    return m ? m[1].toUpperCase() : "FILE";
  }

  function setProgress(f) {
    const id = String(f.id || "");
    let row = progressById.get(id);
    if (!row) {
      row = botRow("progress", "progress");
      const label = el("div", { class: "progress-head" }, el("span", { class: "progress-note" }),
        el("span", { class: "progress-pct" }));
      const fill = el("div", { class: "progress-fill" });
      const bar = el("div", { class: "progress-bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
        fill);
      row.bubble.append(label, bar);
      row.parts = { note: label.firstChild, pct: label.lastChild, bar, fill };
      if (id) progressById.set(id, row);
      append(row);
    }
    const frac = Number(f.fraction);
    const known = Number.isFinite(frac) && frac >= 0;
    const pct = known ? Math.max(0, Math.min(100, Math.round(frac * 100))) : 0;
    const done = known && frac >= 1;
    const note = String(f.note || "") || (done ? tr("done") : tr("working"));
    keepBottom(() => {
      row.parts.note.textContent = note;
      row.parts.pct.textContent = done ? `✓ ${tr("done")}` : known ? `${pct}%` : "";
      row.parts.fill.style.width = known ? `${pct}%` : "";
      row.classList.toggle("indeterminate", !known);
      row.classList.toggle("done", done);
      row.dataset.done = done ? "true" : "false";
      row.parts.bar.setAttribute("aria-label", note);
      if (typeof f.preview === "string" && f.preview.startsWith("data:image/")) {
        if (!row.parts.preview) {
          row.parts.preview = el("img", { class: "progress-preview", alt: note });
          row.bubble.append(row.parts.preview);
        }
        row.parts.preview.src = f.preview;
        row.parts.preview.alt = note;
      }
      if (known) row.parts.bar.setAttribute("aria-valuenow", String(pct));
      else row.parts.bar.removeAttribute("aria-valuenow");
    });
  }

  function addUserMessage(id, text, files, queued) {
    const bubble = el("div", { class: "bubble" });
    if (files.length) {
      const box = el("div", { class: "attachments" });
      for (const c of files) box.append(chipView(c, false));
      bubble.append(box);
    }
    if (text) bubble.append(el("div", { class: "text plain", text }));
    const row = el(
      "div",
      { class: "row user", "data-testid": "user-message", role: "article", "aria-label": tr("you"),
        title: fmtTime(new Date()) },
      bubble,
    );
    row.bubble = bubble;
    if (queued) markQueued(row, true);
    append(row, { mine: true });
    return row;
  }

  function markQueued(row, on) {
    row.classList.toggle("queued", on);
    row.querySelector(".queued-note")?.remove();
    if (on) row.bubble.append(el("span", { class: "queued-note", text: tr("queued") }));
  }

  // typing indicator: shown while a sent message has no reply yet
  function expectReply(id) {
    awaiting.set(id, setTimeout(() => replied(id), 30000));
    showTyping();
  }

  function replied(id) {
    if (!awaiting.has(id)) return;
    clearTimeout(awaiting.get(id));
    awaiting.delete(id);
    if (!awaiting.size) hideTyping();
  }

  function clearAwaiting() {
    for (const t of awaiting.values()) clearTimeout(t);
    awaiting.clear();
    hideTyping();
  }

  function showTyping() {
    if (typingRow && typingRow.parentNode) return;
    const stick = nearBottom();
    typingRow = botRow("typing", "typing");
    typingRow.setAttribute("aria-label", tr("typing"));
    typingRow.bubble.append(el("span", { class: "dots", "aria-hidden": "true" }, el("i"), el("i"), el("i")));
    list.append(typingRow);
    if (stick) scrollToBottom(false);
  }

  function hideTyping() {
    typingRow?.remove();
    typingRow = null;
  }

  // -- connection --------------------------------------------------------------------------
  let visitor = null;
  try {
    visitor = localStorage.getItem(VISITOR_KEY);
  } catch {
    /* storage blocked: a new id for this page */
  }
  if (!visitor || !/^[\w-]{1,64}$/.test(visitor)) {
    visitor = uid();
    try {
      localStorage.setItem(VISITOR_KEY, visitor);
    } catch {
      /* private mode: the id lasts for this page */
    }
  }

  let ws = null;
  let ready = false;
  let attempt = 0;
  let retryTimer = null;
  let countdownTimer = null;
  let commands = [];
  let limits = {};
  const outbox = []; // frames waiting for a connection: {frame, row}

  function wsUrl() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  }

  function setConn(state) {
    root.dataset.connection = state;
    connEl.dataset.state = state;
    connText.textContent = tr(`status_${state}`);
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = null;
    if (ws) return;
    setConn(attempt ? "reconnecting" : "connecting");
    if (attempt) showBanner(tr("reconnect_now"));
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.addEventListener("open", () => {
      sock.send(JSON.stringify({ type: "hello", visitor, locale: LOCALE }));
    });
    sock.addEventListener("message", (ev) => {
      if (sock !== ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") handleFrame(frame);
    });
    sock.addEventListener("close", () => {
      if (sock !== ws) return;
      ws = null;
      ready = false;
      clearAwaiting();
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    attempt++;
    const base = Math.min(15000, 600 * 2 ** Math.min(attempt - 1, 5));
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    const at = Date.now() + delay;
    setConn(navigator.onLine === false ? "offline" : "reconnecting");
    const tick = () => {
      if (navigator.onLine === false) return showBanner(tr("offline"));
      showBanner(tr("reconnect_in", { s: Math.max(1, Math.ceil((at - Date.now()) / 1000)) }));
    };
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 500);
    retryTimer = setTimeout(connect, delay);
  }

  function showBanner(text) {
    bannerText.textContent = text;
    banner.hidden = false;
  }

  function reconnectNow() {
    if (ws) return;
    connect();
  }

  function sendFrame(frame, row) {
    if (ready && ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    outbox.push({ frame, row });
    if (row) markQueued(row, true);
    return false;
  }

  function flushOutbox() {
    while (outbox.length && ready && ws && ws.readyState === WebSocket.OPEN) {
      const { frame, row } = outbox.shift();
      ws.send(JSON.stringify(frame));
      if (row) markQueued(row, false);
      if (frame.id) expectReply(frame.id);
    }
  }

  function handleFrame(f) {
    if (f.reply_to) replied(String(f.reply_to));
    switch (f.type) {
      case "welcome":
        ready = true;
        attempt = 0;
        clearInterval(countdownTimer);
        banner.hidden = true;
        commands = Array.isArray(f.commands) ? f.commands.filter((c) => c && typeof c.name === "string") : [];
        limits = f.limits && typeof f.limits === "object" ? f.limits : {};
        if (typeof f.visitor === "string" && /^[\w-]{1,64}$/.test(f.visitor) && f.visitor !== visitor) {
          visitor = f.visitor;
          try {
            localStorage.setItem(VISITOR_KEY, visitor);
          } catch {
            /* ignore */
          }
        }
        if (typeof f.locale === "string" && /^[\w-]{1,16}$/.test(f.locale)) list.lang = f.locale;
        setConn("online");
        updateAssist();
        flushOutbox();
        break;
      case "message":
        addBotMessage(f);
        break;
      case "edit":
        editMessage(f);
        break;
      case "file":
        addFile(f);
        break;
      case "progress":
        setProgress(f);
        break;
      case "error":
        addError(String(f.text || ""));
        break;
      default:
        break; // newer server frame types are ignored
    }
  }

  // -- sending -------------------------------------------------------------------------------
  let chips = []; // {key, name, size, mime, status: uploading|ready, id, promise, xhr, thumb, pct}
  let lastSent = "";
  let sending = false;

  async function submit() {
    if (sending) return;
    const text = composer.value.trim();
    if (!text && !chips.length) return;
    sending = true;
    try {
      const waiting = chips.filter((c) => c.status === "uploading");
      if (waiting.length) {
        sendBtn.setAttribute("aria-busy", "true");
        const before = chips.length;
        await Promise.all(waiting.map((c) => c.promise));
        sendBtn.removeAttribute("aria-busy");
        if (chips.length < before) return; // an upload failed: keep the text so the user can retry
      }
      const files = chips.filter((c) => c.status === "ready");
      const body = composer.value.trim();
      if (!body && !files.length) return;
      const id = uid();
      const queued = !(ready && ws && ws.readyState === WebSocket.OPEN);
      const row = addUserMessage(id, body, files, queued);
      chips = chips.filter((c) => !files.includes(c));
      renderChips();
      composer.value = "";
      autosize();
      updateAssist();
      if (body) lastSent = body;
      const frame = { type: "message", id, text: body, attachments: files.map((c) => c.id) };
      if (sendFrame(frame, row)) expectReply(id);
    } finally {
      sending = false;
      updateSendState();
    }
  }

  function clickAction(btn, b) {
    const id = uid();
    const frame = { type: "action", id, action_id: String(b.action_id ?? ""), value: String(b.value ?? "") };
    btn.classList.add("clicked");
    setTimeout(() => btn.classList.remove("clicked"), 600);
    // echo the choice, so the reply that follows has its question in the history
    const queued = !(ready && ws && ws.readyState === WebSocket.OPEN);
    const row = addUserMessage(id, btn.textContent, [], queued);
    row.classList.add("action-echo");
    if (sendFrame(frame, row)) expectReply(id);
  }

  // -- uploads -------------------------------------------------------------------------------
  function addFiles(fileList) {
    for (const file of Array.from(fileList || [])) uploadFile(file);
    composer.focus();
  }

  function uploadFile(file) {
    const limit = Number(limits.max_upload_bytes) || 0;
    if (limit && file.size > limit) {
      addError(tr("too_large", { name: file.name, limit: fmtSize(limit) }));
      return;
    }
    const chip = { key: uid(), name: file.name, size: file.size, mime: file.type || "", status: "uploading", pct: 0 };
    if (chip.mime.startsWith("image/")) chip.thumb = URL.createObjectURL(file);
    chip.promise = new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      chip.xhr = xhr;
      xhr.open("POST", `/api/upload?locale=${encodeURIComponent(LOCALE)}`);
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        chip.pct = Math.round((e.loaded / e.total) * 100);
        const s = chip.view?.querySelector(".chip-status");
        if (s) s.textContent = tr("uploading", { percent: chip.pct });
      });
      const fail = (message) => {
        dropChip(chip);
        addError(message || tr("upload_failed", { name: chip.name }));
        resolve();
      };
      xhr.addEventListener("load", () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          body = null;
        }
        if (xhr.status >= 200 && xhr.status < 300 && body && body.id != null) {
          chip.status = "ready";
          chip.id = String(body.id);
          chip.name = String(body.name || chip.name);
          chip.mime = String(body.mime || chip.mime);
          chip.size = Number(body.size ?? chip.size);
          renderChips();
          updateSendState();
          resolve();
        } else {
          fail(body && typeof body.error === "string" ? body.error : null);
        }
      });
      xhr.addEventListener("error", () => fail(null));
      xhr.addEventListener("abort", () => {
        dropChip(chip);
        resolve();
      });
      const fd = new FormData();
      fd.append("file", file, file.name);
      xhr.send(fd);
    });
    chips.push(chip);
    renderChips();
    updateSendState();
  }

  function dropChip(chip) {
    const had = chips.includes(chip);
    chips = chips.filter((c) => c !== chip);
    if (chip.thumb && had) setTimeout(() => URL.revokeObjectURL(chip.thumb), 60000);
    renderChips();
    updateSendState();
  }

  function chipView(c, removable) {
    const thumb = c.thumb
      ? el("img", { class: "chip-thumb", src: c.thumb, alt: "" })
      : el("span", { class: "chip-thumb file-icon", "aria-hidden": "true", text: extOf(c.name) });
    const status = c.status === "uploading" ? tr("uploading", { percent: c.pct || 0 }) : fmtSize(c.size);
    const view = el(
      "div",
      {
        class: `chip ${c.status}`,
        "data-testid": removable ? "pending-attachment" : "sent-attachment",
        "data-status": c.status,
      },
      thumb,
      el("span", { class: "chip-body" }, el("span", { class: "chip-name", text: c.name }),
        el("span", { class: "chip-status", text: status })),
    );
    if (removable) {
      view.append(
        el("button", {
          type: "button",
          class: "chip-remove",
          "aria-label": tr("remove_file", { name: c.name }),
          text: "×",
          onclick: () => {
            if (c.status === "uploading" && c.xhr) c.xhr.abort();
            else dropChip(c);
            composer.focus();
          },
        }),
      );
    }
    return view;
  }

  function renderChips() {
    chipsBox.replaceChildren(...chips.map((c) => (c.view = chipView(c, true))));
    chipsBox.hidden = !chips.length;
  }

  function updateSendState() {
    const has = composer.value.trim().length > 0 || chips.length > 0;
    sendBtn.disabled = !has;
  }

  // -- autocomplete and usage hint ----------------------------------------------------------------
  let acItems = [];
  let acIndex = 0;
  let acDismissed = null; // the token the user closed the popup on with Escape

  /** The command word being typed ("he" for "/he|"), or null when the caret is not in one. */
  function commandToken() {
    const caret = composer.selectionStart ?? composer.value.length;
    const m = /^\/([\w-]*)$/.exec(composer.value.slice(0, caret));
    return m ? m[1] : null;
  }

  function updateAssist() {
    updateSendState();
    const q = commandToken();
    if (q === null || !commands.length || acDismissed === composer.value) {
      closePopup();
    } else {
      const lower = q.toLowerCase();
      const starts = commands.filter((c) => c.name.startsWith(lower));
      const contains = commands.filter((c) => !c.name.startsWith(lower) && c.name.includes(lower));
      acItems = starts.concat(contains);
      acIndex = Math.min(acIndex, Math.max(0, acItems.length - 1));
      renderPopup(q);
    }
    updateHint();
  }

  function renderPopup(q) {
    const head = el("div", { class: "ac-head", "aria-hidden": "true", text: tr("commands") });
    if (!acItems.length) {
      popup.replaceChildren(head, el("div", { class: "ac-empty", text: tr("no_match", { query: q }) }));
    } else {
      const nodes = acItems.map((c, i) => {
        const item = el(
          "div",
          {
            class: "ac-item",
            role: "option",
            id: `ac-${i}`,
            "data-name": c.name,
            "aria-selected": i === acIndex ? "true" : "false",
          },
          el(
            "div",
            { class: "ac-line" },
            el("span", { class: "ac-usage", text: String(c.usage || `/${c.name}`) }),
            c.role === "admin" ? el("span", { class: "badge", text: tr("admin") }) : null,
          ),
          el("div", { class: "ac-desc", text: String(c.description || "") }),
        );
        item.addEventListener("mousedown", (e) => e.preventDefault()); // keep focus in the composer
        item.addEventListener("click", () => pick(i));
        item.addEventListener("mousemove", () => {
          if (acIndex !== i) {
            acIndex = i;
            highlight();
          }
        });
        return item;
      });
      popup.replaceChildren(head, ...nodes);
    }
    popup.hidden = false;
    composer.setAttribute("aria-expanded", "true");
    highlight();
  }

  function highlight() {
    const items = popup.querySelectorAll(".ac-item");
    items.forEach((n, i) => n.setAttribute("aria-selected", i === acIndex ? "true" : "false"));
    const active = items[acIndex];
    if (active) {
      composer.setAttribute("aria-activedescendant", active.id);
      active.scrollIntoView({ block: "nearest" });
    } else composer.removeAttribute("aria-activedescendant");
  }

  function closePopup() {
    if (popup.hidden) return;
    popup.hidden = true;
    acItems = [];
    acIndex = 0;
    composer.setAttribute("aria-expanded", "false");
    composer.removeAttribute("aria-activedescendant");
  }

  function pick(i) {
    const c = acItems[i];
    if (!c) return;
    const caret = composer.selectionStart ?? composer.value.length;
    const rest = composer.value.slice(caret).replace(/^[\w-]*/, "").replace(/^\s*/, "");
    const head = `/${c.name} `;
    composer.value = head + rest;
    composer.setSelectionRange(head.length, head.length);
    composer.focus();
    closePopup();
    autosize();
    updateAssist();
  }

  function updateHint() {
    const m = /^\/([\w-]+)\s/.exec(composer.value);
    const c = m ? commands.find((x) => x.name === m[1].toLowerCase()) : null;
    if (!c || !Array.isArray(c.options) || !c.options.length || !popup.hidden) {
      hint.hidden = true;
      hint.replaceChildren();
      return;
    }
    const opts = c.options.map((o) =>
      el(
        "li",
        null,
        el("code", { text: String(o.name) }),
        o.required ? el("span", { class: "badge", text: tr("required") }) : null,
        ` ${String(o.description || "")}`,
        Array.isArray(o.choices) && o.choices.length ? ` (${o.choices.join(", ")})` : "",
      ),
    );
    hint.replaceChildren(
      el("div", null, el("strong", { text: `${tr("usage")}: ` }), el("code", { text: String(c.usage) }),
        ` — ${String(c.description || "")}`),
      el("ul", null, ...opts),
    );
    hint.hidden = false;
  }

  // -- composer behaviour ---------------------------------------------------------------------------
  function autosize() {
    composer.style.height = "auto";
    composer.style.height = `${Math.min(composer.scrollHeight, 200)}px`;
  }

  composer.addEventListener("input", () => {
    if (acDismissed !== null && acDismissed !== composer.value) acDismissed = null;
    autosize();
    updateAssist();
  });
  composer.addEventListener("click", updateAssist);
  composer.addEventListener("blur", () => setTimeout(() => document.activeElement !== composer && closePopup(), 150));
  composer.addEventListener("focus", updateAssist);

  composer.addEventListener("keydown", (e) => {
    if (e.isComposing || e.keyCode === 229) return; // IME (e.g. Chinese pinyin) is choosing characters
    const open = !popup.hidden;
    if (open && acItems.length && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
      e.preventDefault();
      const n = acItems.length;
      acIndex = (acIndex + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      highlight();
      return;
    }
    if (open && e.key === "Escape") {
      e.preventDefault();
      acDismissed = composer.value;
      closePopup();
      updateHint();
      return;
    }
    if (open && acItems.length && e.key === "Tab" && !e.shiftKey) {
      e.preventDefault();
      pick(acIndex);
      return;
    }
    if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      if (open && acItems.length) {
        const q = (commandToken() || "").toLowerCase();
        if (acItems[acIndex].name !== q) {
          pick(acIndex); // complete a partial command; a full one is sent as typed
          return;
        }
        closePopup();
      }
      submit();
      return;
    }
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      submit();
      return;
    }
    if (e.key === "ArrowUp" && !composer.value && lastSent) {
      e.preventDefault();
      composer.value = lastSent;
      autosize();
      updateAssist();
    }
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    closePopup();
    submit();
    composer.focus();
  });

  attachBtn.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    addFiles(fileInput.files);
    fileInput.value = "";
  });

  composer.addEventListener("paste", (e) => {
    const files = e.clipboardData?.files;
    if (files && files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });

  // drag and drop anywhere on the page
  let dragDepth = 0;
  const hasFiles = (e) => Array.from(e.dataTransfer?.types || []).includes("Files");
  window.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth++;
    dropzone.hidden = false;
  });
  window.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("dragleave", (e) => {
    if (!hasFiles(e)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) dropzone.hidden = true;
  });
  window.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    dropzone.hidden = true;
    addFiles(e.dataTransfer.files);
  });

  list.addEventListener("scroll", () => {
    if (nearBottom()) jumpBtn.hidden = true;
  });
  jumpBtn.addEventListener("click", () => {
    scrollToBottom(true);
    composer.focus();
  });
  retryBtn.addEventListener("click", () => {
    attempt = Math.max(attempt, 1);
    reconnectNow();
  });
  window.addEventListener("online", () => reconnectNow());
  window.addEventListener("offline", () => {
    if (!ws) {
      setConn("offline");
      showBanner(tr("offline"));
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      document.title = tr("title");
      if (!ws) reconnectNow();
    }
  });

  // Read-only hooks for tests and debugging.
  window.TeamBotChat = Object.freeze({
    renderMarkdown,
    lang: LANG,
    get limits() {
      return { ...limits };
    },
  });

  applyI18n();
  renderChips();
  updateSendState();
  autosize();
  connect();
  composer.focus();
})();

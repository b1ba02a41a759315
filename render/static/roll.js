// The live piano roll (render/roll.py): draws a roll_data() value on a canvas, moves a playhead with the
// gr.Audio player named by props.audio_elem_id, seeks it on click, and selects bars on drag/shift-click.
// One shared requestAnimationFrame loop serves every roll; it runs only while some roll's audio plays.
(function () {
  "use strict";
  if (window.MidiBangersRoll) return;

  const RULER = 16; // bar numbers strip (CSS px)
  // A long song gets at least MIN_BAR_PX a bar, wider than the box: it scrolls sideways (the playhead is followed
  // while the audio plays), so a bar of a 250-bar song can still be clicked and dragged.
  const MIN_BAR_PX = 20;
  const MAX_STAGE_PX = 12000; // a canvas stays within the browser's limits (x2 on a high-density screen)
  const GAP = 6; // between the pitched area and the drum lane
  const BLACK = new Set([1, 3, 6, 8, 10]);
  const rolls = new Set();
  let raf = 0;
  let sweeper = 0;
  const stats = { frames: 0 }; // frames drawn by the shared loop (tests check that it rests when idle)

  function frame() {
    raf = 0;
    stats.frames++;
    let playing = false;
    for (const r of rolls) playing = r.tick() || playing;
    if (playing) raf = requestAnimationFrame(frame);
  }
  function wake() {
    if (!raf) raf = requestAnimationFrame(frame);
  }
  // Twice a second: forget rolls that left the page, and find each roll's media element again (Gradio
  // makes a new player when a new file arrives).
  function sweep() {
    for (const r of Array.from(rolls)) {
      if (!r.el.isConnected) { r.destroy(); rolls.delete(r); } else r.findMedia();
    }
    if (!rolls.size) { clearInterval(sweeper); sweeper = 0; }
  }

  // The media element playing the gr.Audio block `id`: a plain <audio>/<video> with a source in the
  // block, else the one WaveSurfer keeps in an (open) shadow root inside it.
  function mediaIn(id) {
    const block = id && document.getElementById(id);
    if (!block) return null;
    for (const m of block.querySelectorAll("audio, video")) if (m.currentSrc || m.getAttribute("src")) return m;
    for (const e of block.querySelectorAll("*")) {
      if (!e.shadowRoot) continue;
      const m = e.shadowRoot.querySelector("audio, video");
      if (m) return m;
    }
    return null;
  }

  function parse(v) {
    if (typeof v === "string") { try { v = JSON.parse(v); } catch (e) { v = null; } }
    return v && typeof v === "object" && v.seconds > 0 ? v : null;
  }

  class Roll {
    constructor(el, props, trigger) {
      this.el = el;
      this.props = props;
      this.trigger = trigger;
      this.stage = el.querySelector(".mb-stage");
      this.scroll = el.querySelector(".mb-scroll") || this.stage;
      this.canvas = el.querySelector(".mb-canvas");
      this.legend = el.querySelector(".mb-legend");
      this.head = el.querySelector(".mb-head");
      this.selBox = el.querySelector(".mb-sel");
      this.data = null;
      this.media = null;
      this.lastX = null;
      this.width = 0; // the stage's width (CSS px): the box's, or more for a long song
      this.viewW = 0; // the box's width
      this.sel = null; // [first, last] bar, 1-based
      this.anchor = null;
      this.onMedia = () => wake();
      this.resize = new ResizeObserver(() => {
        if (this.scroll.clientWidth !== this.viewW) { this.draw(); wake(); }
      });
      this.resize.observe(this.scroll);
      this.bindPointer();
      this.setData(props.value);
      this.findMedia();
    }

    destroy() {
      this.resize.disconnect();
      this.setMedia(null);
    }

    setMedia(m) {
      if (m === this.media) return;
      const events = ["play", "pause", "seeked", "timeupdate", "loadedmetadata", "ended"];
      if (this.media) for (const e of events) this.media.removeEventListener(e, this.onMedia);
      this.media = m;
      if (m) for (const e of events) m.addEventListener(e, this.onMedia);
      this.lastX = null;
      wake();
    }

    findMedia() {
      if (this.media && this.media.isConnected && (this.media.currentSrc || this.media.src)) return;
      this.setMedia(mediaIn(this.props.audio_elem_id));
    }

    setData(value) {
      this.data = parse(value);
      this.lastX = null;
      if (this.sel) this.select(null);
      this.drawLegend();
      this.draw();
      wake();
    }

    // ---- drawing ------------------------------------------------------------------------------
    drawLegend() {
      const d = this.data;
      this.legend.textContent = "";
      if (!d) return;
      for (const p of d.parts) {
        const item = document.createElement("span");
        item.className = "mb-item";
        item.dataset.part = p.name;
        const sw = document.createElement("span");
        sw.className = "mb-swatch";
        sw.style.background = p.color;
        item.append(sw, `${p.name} (${p.count})`);
        this.legend.append(item);
      }
      const info = document.createElement("span");
      info.className = "mb-info";
      const ts = d.time_signature.join("/");
      info.textContent = `${d.n_bars} bar${d.n_bars === 1 ? "" : "s"} · ${Math.round(d.bpm)} BPM · ${ts}`;
      this.legend.append(info);
    }

    layout() {
      const d = this.data;
      const nDrums = d ? d.drum_rows.length : 0;
      const pr = d && d.pitch_range;
      const rows = pr ? pr[1] - pr[0] + 1 : 0;
      const pitchRow = rows ? Math.max(3, Math.min(10, 260 / rows)) : 0;
      const pitchH = rows ? rows * pitchRow : (nDrums ? 28 : 90);
      const drumRow = 12;
      const drumTop = RULER + pitchH + (nDrums ? GAP : 0);
      return { pr, pitchRow, pitchH, nDrums, drumRow, drumTop, height: drumTop + nDrums * drumRow + 1 };
    }

    draw() {
      const view = this.scroll.clientWidth;
      this.viewW = view;
      const bars = this.data ? this.data.n_bars : 0;
      const W = Math.max(view, Math.min(MAX_STAGE_PX, Math.round(bars * MIN_BAR_PX)));
      this.stage.style.width = view && W > view ? W + "px" : "";
      this.width = view ? W : 0;
      if (!view) return; // hidden: drawn again by the ResizeObserver when shown
      const L = this.layout();
      const dpr = window.devicePixelRatio || 1;
      const c = this.canvas;
      c.style.height = L.height + "px";
      c.width = Math.round(W * dpr);
      c.height = Math.round(L.height * dpr);
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.fillStyle = "#fff";
      g.fillRect(0, 0, W, L.height);
      g.font = "10px ui-sans-serif, system-ui, sans-serif";
      g.textBaseline = "middle";
      const d = this.data;
      if (!d) {
        g.fillStyle = "#999";
        g.fillText("no piano roll yet", 8, RULER + L.pitchH / 2);
        return;
      }
      const X = (t) => (t / d.seconds) * W;
      const yPitch = (p) => RULER + (L.pr[1] - p) * L.pitchRow; // top of the row of pitch p
      const yDrum = (r) => L.drumTop + (L.nDrums - 1 - r) * L.drumRow; // row 0 (lowest key) at the bottom
      // pitched background: black-key rows shaded
      if (L.pr) {
        g.fillStyle = "#f3f4f7";
        for (let p = L.pr[0]; p <= L.pr[1]; p++) if (BLACK.has(p % 12)) g.fillRect(0, yPitch(p), W, L.pitchRow);
      } else {
        g.fillStyle = "#aaa";
        g.fillText("no pitched notes", 8, RULER + L.pitchH / 2);
      }
      if (L.nDrums) {
        g.fillStyle = "#f6f6f6";
        g.fillRect(0, L.drumTop, W, L.nDrums * L.drumRow);
        g.fillStyle = "#ccc";
        g.fillRect(0, L.drumTop - GAP / 2 - 0.5, W, 1);
      }
      // beat and bar lines, bar numbers (thinned so that labels stay ~28 px apart)
      g.fillStyle = "#eee";
      for (const t of d.beats) g.fillRect(Math.round(X(t)), RULER, 1, L.height - RULER);
      const every = Math.max(1, Math.ceil(28 / Math.max(1e-6, X(d.bar_seconds))));
      for (let b = 0; b < d.bars.length; b++) {
        const x = Math.min(W - 1, Math.round(X(d.bars[b])));
        g.fillStyle = b % every === 0 ? "#b8b8b8" : "#dedede";
        g.fillRect(x, 0, 1, L.height);
        if (b < d.n_bars && b % every === 0) {
          g.fillStyle = "#666";
          g.fillText(String(b + 1), x + 3, RULER / 2);
        }
      }
      g.fillStyle = "#ccc";
      g.fillRect(0, RULER - 1, W, 1);
      // notes: one colour per part, opacity from velocity
      for (const p of d.parts) {
        g.fillStyle = p.color;
        const h = p.drums ? L.drumRow - 2 : Math.max(2, L.pitchRow - 1);
        for (const n of p.notes) {
          if (!p.drums && !L.pr) continue;
          const y = p.drums ? yDrum(n[2]) + 1 : yPitch(n[2]) + (L.pitchRow - h) / 2;
          g.globalAlpha = 0.45 + 0.55 * Math.min(1, n[3] / 127);
          g.fillRect(X(n[0]), y, Math.max(1.5, X(n[1]) - 0.5), h);
        }
      }
      g.globalAlpha = 1;
      // row labels over the left edge: octaves (C) and drum names
      const label = (text, y) => {
        g.fillStyle = "rgba(255,255,255,0.8)";
        g.fillRect(1, y - 6, g.measureText(text).width + 5, 12);
        g.fillStyle = "#444";
        g.fillText(text, 3, y);
      };
      if (L.pr) {
        for (let p = L.pr[0]; p <= L.pr[1]; p++) if (p % 12 === 0) label("C" + (p / 12 - 1), yPitch(p) + L.pitchRow / 2);
      }
      d.drum_rows.forEach((row, r) => label(row.name, yDrum(r) + L.drumRow / 2));
      this.drawSelection();
      this.lastX = null;
    }

    drawSelection() {
      const d = this.data;
      if (!d || !this.sel || !this.width) { this.selBox.style.display = "none"; return; }
      const x0 = (d.bars[this.sel[0] - 1] / d.seconds) * this.width;
      const x1 = (d.bars[this.sel[1]] / d.seconds) * this.width;
      Object.assign(this.selBox.style, { display: "block", transform: `translateX(${x0}px)`, width: `${x1 - x0}px` });
    }

    // called by the shared loop; true while the audio plays
    tick() {
      const m = this.media;
      if (!m || !this.data || !this.width) { this.head.style.display = "none"; return false; }
      const t = (this.data.audio_start || 0) + (m.currentTime || 0); // the song's time (the audio may start later)
      const x = Math.max(0, Math.min(this.width, (t / this.data.seconds) * this.width));
      const playing = !m.paused && !m.ended;
      if (playing && this.width > this.viewW) { // keep the playhead in the box
        const left = this.scroll.scrollLeft;
        if (x < left || x > left + this.viewW - 16) this.scroll.scrollLeft = Math.max(0, x - this.viewW * 0.1);
      }
      if (x !== this.lastX) {
        this.head.style.display = "block";
        this.head.style.transform = `translateX(${x}px)`;
        this.head.dataset.time = t.toFixed(3);
        this.lastX = x;
      }
      return playing;
    }

    // ---- pointer: click seeks, drag or shift-click selects whole bars ------------------------------
    barAt(clientX) {
      const d = this.data;
      const r = this.stage.getBoundingClientRect();
      const t = ((clientX - r.left) / r.width) * d.seconds;
      return Math.max(1, Math.min(d.n_bars, Math.floor(t / d.bar_seconds + 1e-9) + 1));
    }

    select(range) {
      this.sel = range;
      this.el.dataset.selectedBars = range ? `${range[0]}-${range[1]}` : "";
      this.drawSelection();
      this.trigger("select", range ? { index: range, value: range, selected: true }
                                  : { index: null, value: null, selected: false });
    }

    seek(clientX) {
      const m = this.media;
      if (!m || !this.data) return;
      const r = this.stage.getBoundingClientRect();
      let t = Math.max(0, ((clientX - r.left) / r.width) * this.data.seconds - (this.data.audio_start || 0));
      if (isFinite(m.duration)) t = Math.min(t, m.duration);
      m.currentTime = t;
      wake();
    }

    bindPointer() {
      const s = this.stage;
      let down = null;
      s.addEventListener("pointerdown", (e) => {
        if (!this.data || e.button !== 0) return;
        down = { x: e.clientX, bar: this.barAt(e.clientX), drag: false };
        s.setPointerCapture(e.pointerId);
      });
      s.addEventListener("pointermove", (e) => {
        if (!down) return;
        if (!down.drag && Math.abs(e.clientX - down.x) < 5) return;
        down.drag = true;
        const b = this.barAt(e.clientX);
        this.sel = [Math.min(down.bar, b), Math.max(down.bar, b)];
        this.drawSelection();
      });
      s.addEventListener("pointerup", (e) => {
        if (!down) return;
        const was = down;
        down = null;
        if (was.drag) {
          this.anchor = was.bar;
          this.select(this.sel);
        } else if (e.shiftKey) {
          const a = this.anchor || (this.sel ? this.sel[0] : was.bar);
          this.anchor = a;
          this.select([Math.min(a, was.bar), Math.max(a, was.bar)]);
        } else {
          this.anchor = was.bar;
          this.seek(e.clientX);
        }
      });
      s.addEventListener("pointercancel", () => { down = null; this.drawSelection(); });
      s.addEventListener("dblclick", () => { if (this.sel) this.select(null); });
      s.tabIndex = 0;
      s.addEventListener("keydown", (e) => { if (e.key === "Escape" && this.sel) this.select(null); });
    }
  }

  function mount(element, props, trigger, watch) {
    const roll = new Roll(element, props, trigger);
    element.midiBangersRoll = roll;
    rolls.add(roll);
    watch("value", () => roll.setData(props.value));
    watch("audio_elem_id", () => { roll.setMedia(null); roll.findMedia(); });
    if (!sweeper) sweeper = setInterval(sweep, 500);
    return roll;
  }

  window.MidiBangersRoll = { mount, rolls, mediaIn, stats };
})();

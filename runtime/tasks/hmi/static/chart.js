"use strict";
// A small line/step chart on <canvas>, written for this HMI (no library, no network): series of
// [time ms, value] on a shared time axis, a left and an optional right value axis, and a "now" line.
window.Chart = (function () {
  function niceRange(lo, hi) {
    if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
    if (lo === hi) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.05;
    return [lo - pad, hi + pad];
  }
  // Times are shown on the site's clock (offsetMin: its UTC offset), never the browser's.
  function fmtTime(ms, offsetMin) {
    const d = new Date(ms + (offsetMin || 0) * 60e3);
    return String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
  }
  // opts: {offsetMin, series: [{points, color, axis: "left"|"right", step, width, dash}], t0, t1, now,
  //        left: [lo, hi] | null, right: [lo, hi] | null, leftLabel, rightLabel, hlines: [{y, color, axis}]}
  function draw(canvas, opts) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height, L = 70, R = opts.rightLabel ? 70 : 20, T = 12, B = 28;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "12px system-ui, sans-serif";
    const t0 = opts.t0, t1 = opts.t1 > opts.t0 ? opts.t1 : opts.t0 + 1;
    function range(axis) {
      if (opts[axis]) return opts[axis];
      let lo = Infinity, hi = -Infinity;
      for (const s of opts.series) if ((s.axis || "left") === axis)
        for (const p of s.points) if (p[1] !== null && isFinite(p[1])) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
      return niceRange(lo, hi);
    }
    const ranges = {left: range("left"), right: range("right")};
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const y = (v, axis) => { const [lo, hi] = ranges[axis || "left"]; return T + (hi - v) / (hi - lo) * (H - T - B); };
    ctx.strokeStyle = "#e5e7eb"; ctx.fillStyle = "#6b7280"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const [lo, hi] = ranges.left, v = lo + (hi - lo) * i / 4, yy = y(v, "left");
      ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(W - R, yy); ctx.stroke();
      ctx.textAlign = "right"; ctx.fillText((opts.fmtLeft || String)(v), L - 6, yy + 4);
      if (opts.rightLabel) {
        const [rl, rh] = ranges.right;
        ctx.textAlign = "left"; ctx.fillText((opts.fmtRight || String)(rl + (rh - rl) * i / 4), W - R + 6, yy + 4);
      }
    }
    const hours = (t1 - t0) / 3600e3, stepH = hours > 36 ? 6 : hours > 12 ? 3 : 1;
    const off = (opts.offsetMin || 0) * 60e3;
    let tick = Math.ceil((t0 + off) / (stepH * 3600e3)) * stepH * 3600e3 - off;
    ctx.textAlign = "center";
    for (; tick <= t1; tick += stepH * 3600e3) ctx.fillText(fmtTime(tick, opts.offsetMin), x(tick), H - 8);
    ctx.save(); ctx.translate(12, (H - B) / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
    ctx.fillText(opts.leftLabel || "", 0, 0); ctx.restore();
    if (opts.rightLabel) {
      ctx.save(); ctx.translate(W - 10, (H - B) / 2); ctx.rotate(Math.PI / 2); ctx.textAlign = "center";
      ctx.fillText(opts.rightLabel, 0, 0); ctx.restore();
    }
    for (const h of opts.hlines || []) {
      ctx.strokeStyle = h.color; ctx.setLineDash([4, 4]);
      ctx.beginPath(); ctx.moveTo(L, y(h.y, h.axis)); ctx.lineTo(W - R, y(h.y, h.axis)); ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.save(); ctx.beginPath(); ctx.rect(L, T, W - L - R, H - T - B); ctx.clip();
    for (const s of opts.series) {
      ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 2; ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      let started = false, prevY = null;
      for (const [t, v] of s.points) {
        if (v === null || !isFinite(v)) { started = false; continue; }
        const xx = x(t), yy = y(v, s.axis);
        if (!started) { ctx.moveTo(xx, yy); started = true; }
        else if (s.step) { ctx.lineTo(xx, prevY); ctx.lineTo(xx, yy); }
        else ctx.lineTo(xx, yy);
        prevY = yy;
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    if (opts.now !== undefined && opts.now >= t0 && opts.now <= t1) {
      ctx.strokeStyle = "#111827"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(x(opts.now), T); ctx.lineTo(x(opts.now), H - B); ctx.stroke();
    }
    ctx.restore();
  }
  return {draw: draw};
})();

/* eyebench static leaderboard: renders window.EYEBENCH_DATA (data/site.js).
 * Tables sort on a header click; curves are SVG (hover for values, toggle methods); samples
 * load their meshes lazily through <script> tags (file:// allows no fetch) and are drawn
 * with three.js (vendored, classic build). Written for this project; no third-party code. */
(function () {
  'use strict';
  const D = window.EYEBENCH_DATA;
  const SVGNS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#2457c5', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
    '#17becf', '#bcbd22', '#7f7f7f', '#1f3b73', '#b15928'];
  const OPEN = 0, CLOSED = 1, UNKNOWN = -1;
  const ERR_MAX_MM = 4.0;

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = v;
      else if (k === 'cls') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      node.appendChild(typeof kid === 'string' ? document.createTextNode(kid) : kid);
    }
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function fmt(v, digits) {
    return v === null || v === undefined ? '–' : Number(v).toFixed(digits === undefined ? 3 : digits);
  }
  function methodColor(methods, m) { return COLORS[methods.indexOf(m) % COLORS.length]; }

  /* ---------------------------------------------------------------- sortable tables */
  // table: {columns: [{name, title, higher}], rows: [{method, marks, cells: [{v, text, ci, best}]}]}
  function recordTable(table, id, firstTitle) {
    const header = [{ title: firstTitle || 'method', higher: null }].concat(table.columns);
    const rows = table.rows.map((r) => ({
      sort: [r.method].concat(r.cells.map((c) => (c.v === null ? null : c.v))),
      cells: [el('td', { cls: 'method' }, r.method + (r.marks ? ' ' + r.marks : ''))].concat(
        r.cells.map((c) => el('td', { cls: c.best ? 'best' : null, title: c.ci ? '95% CI ' + c.ci : null },
          c.text, c.ci ? el('span', { cls: 'ci' }, c.ci) : null))),
    }));
    return sortable(header, rows, id);
  }
  function leadingNumber(text) {
    const m = /^[^0-9+\-.]*([+\-]?\d+(?:\.\d+)?)/.exec(text);
    return m ? parseFloat(m[1]) : null;
  }
  // block: {header: [..], rows: [[..]]}: the eye checks, computed by benchmark.leaderboard
  function textTable(block, id) {
    const header = block.header.map((t, i) => ({ title: t, higher: i === 0 ? null : true }));
    const rows = block.rows.map((r) => ({
      sort: r.map((t, i) => (i === 0 ? t : leadingNumber(t))),
      cells: r.map((t, i) => el('td', { cls: i === 0 ? 'method' : null }, t)),
    }));
    return sortable(header, rows, id);
  }
  function sortable(header, rows, id) {
    const tbody = el('tbody');
    const ths = header.map((col, i) => el('th', {
      cls: 'sortable', scope: 'col', 'data-col': i, title: 'click to sort',
      onclick: () => sortBy(i),
    }, col.title));
    const table = el('table', { id: id, cls: 'sortable-table' }, el('thead', {}, el('tr', {}, ths)), tbody);
    let state = { col: -1, dir: 0 };
    function draw() {
      tbody.textContent = '';
      for (const r of rows) tbody.appendChild(el('tr', {}, r.cells));
    }
    function sortBy(i) {
      // first click: best first (for metrics), or A-Z for the first column; then reverse
      let dir;
      if (state.col === i) dir = -state.dir;
      else dir = i === 0 ? 1 : (header[i].higher === false ? 1 : -1);
      state = { col: i, dir: dir };
      rows.sort((a, b) => {
        const x = a.sort[i], y = b.sort[i];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        if (typeof x === 'number' && typeof y === 'number') return dir * (x - y);
        return dir * String(x).localeCompare(String(y));
      });
      ths.forEach((th, j) => {
        if (j === i) th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
        else th.removeAttribute('aria-sort');
      });
      draw();
    }
    draw();
    return el('div', { cls: 'table-wrap' }, table);
  }

  /* ---------------------------------------------------------------- sections */
  function renderIntro() {
    const t = D.thresholds.length ? D.thresholds.join(', ') : '?';
    document.getElementById('intro').textContent =
      'Eye state is read from each reconstructed mesh (openness = eyelid gap / eye width; an eye ' +
      'is closed when openness < ' + t + '). F1 treats closed as the positive class. Small grey ' +
      'brackets: 95% percentile bootstrap CI over subjects' +
      (D.bootstrap.length ? ' (' + D.bootstrap.join(', ') + ' resamples)' : '') +
      '. Click a column header to sort.';
  }
  function renderTables() {
    const box = document.getElementById('tables-body');
    if (!D.sections.length) box.appendChild(el('p', { cls: 'muted' }, 'No run records yet.'));
    D.sections.forEach((s, si) => {
      box.appendChild(el('h3', { id: 'sec-' + si }, s.title));
      box.appendChild(el('p', { cls: 'note' }, s.description + ' — ' + s.n + ' samples' +
        (s.card ? '; card: data_cards/' + s.card : '') + '.'));
      if (s.table) box.appendChild(recordTable(s.table, 'table-' + si));
      (s.notes || []).forEach((n) => box.appendChild(el('p', { cls: 'note' }, n)));
      (s.blocks || []).forEach((b, bi) => {
        if (b.kind === 'table') box.appendChild(textTable(b, 'table-' + si + '-' + bi));
        else box.appendChild(el('p', { cls: 'note' }, b.text));
      });
      if (s.not_ok.length) {
        box.appendChild(el('p', { cls: 'note' }, 'Not evaluated:'));
        box.appendChild(el('ul', {}, s.not_ok.map((r) => el('li', { cls: 'note' },
          r.method + ' — ' + r.status + ': ' + r.reason + (r.fix ? ' Fix: ' + r.fix : '')))));
      }
    });
  }

  /* ---------------------------------------------------------------- curves */
  function renderCurves() {
    const box = document.getElementById('curves-body');
    let any = false;
    D.sections.forEach((s, si) => {
      if (!s.curves || !s.curves.length) return;
      any = true;
      box.appendChild(el('h3', {}, s.title));
      box.appendChild(curvePlot(s, si));
    });
    if (!any) box.appendChild(el('p', { cls: 'muted' }, 'No section has scans.'));
  }
  function curvePlot(s, si) {
    const W = 640, H = 360, L = 48, R = 12, T = 12, B = 40;
    const methods = s.curves.map((c) => c.method);
    const xs = s.curves[0].thresholds_mm;
    const xmax = xs[xs.length - 1];
    const px = (x) => L + (W - L - R) * x / xmax;
    const py = (y) => T + (H - T - B) * (1 - y);
    const root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, id: 'curve-' + si });
    for (let k = 0; k <= 5; k++) {
      const y = k / 5;
      root.appendChild(svg('line', { x1: L, x2: W - R, y1: py(y), y2: py(y), stroke: '#eee' }));
      const t = svg('text', { x: L - 6, y: py(y) + 4, 'text-anchor': 'end' });
      t.textContent = (100 * y).toFixed(0) + '%';
      root.appendChild(t);
    }
    const step = xmax > 6 ? 2 : 1;
    for (let x = 0; x <= xmax + 1e-9; x += step) {
      root.appendChild(svg('line', { x1: px(x), x2: px(x), y1: T, y2: H - B, stroke: '#f2f2f2' }));
      const t = svg('text', { x: px(x), y: H - B + 14, 'text-anchor': 'middle' });
      t.textContent = String(x);
      root.appendChild(t);
    }
    const xl = svg('text', { x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle' });
    xl.textContent = 'error (mm)';
    root.appendChild(xl);
    const guide = svg('line', { y1: T, y2: H - B, stroke: '#888', 'stroke-dasharray': '3,3', visibility: 'hidden' });
    root.appendChild(guide);
    let kind = 'per_point';
    const paths = {};
    const visible = {};
    function pathData(c) {
      const ys = c[kind] || [];
      return ys.map((y, i) => (i ? 'L' : 'M') + px(c.thresholds_mm[i]).toFixed(1) + ',' +
        py(y).toFixed(1)).join('');
    }
    s.curves.forEach((c) => {
      const p = svg('path', { d: pathData(c), class: 'curve', stroke: methodColor(methods, c.method),
        'data-method': c.method });
      const title = svg('title');
      title.textContent = c.method;
      p.appendChild(title);
      paths[c.method] = p;
      visible[c.method] = true;
      root.appendChild(p);
    });
    const tip = el('div', { cls: 'tooltip', style: 'display:none' });
    document.body.appendChild(tip);
    root.addEventListener('mousemove', (ev) => {
      const rect = root.getBoundingClientRect();
      const x = (ev.clientX - rect.left) * W / rect.width;
      if (x < L || x > W - R) { hide(); return; }
      const mm = (x - L) / (W - L - R) * xmax;
      let i = 0;
      for (let k = 0; k < xs.length; k++) if (Math.abs(xs[k] - mm) < Math.abs(xs[i] - mm)) i = k;
      guide.setAttribute('x1', px(xs[i]));
      guide.setAttribute('x2', px(xs[i]));
      guide.setAttribute('visibility', 'visible');
      const hot = ev.target && ev.target.getAttribute ? ev.target.getAttribute('data-method') : null;
      tip.textContent = '';
      tip.appendChild(el('div', {}, '≤ ' + xs[i].toFixed(2) + ' mm'));
      s.curves.filter((c) => visible[c.method]).forEach((c) => {
        const v = (c[kind] || [])[i];
        tip.appendChild(el('div', { style: hot === c.method ? 'font-weight:700' : null },
          el('span', { cls: 'swatch', style: 'display:inline-block;width:10px;height:3px;margin-right:5px;vertical-align:middle;background:' + methodColor(methods, c.method) }),
          c.method + ': ' + (v === undefined || v === null ? '–' : (100 * v).toFixed(1) + '%')));
      });
      tip.style.display = 'block';
      tip.style.left = (ev.pageX + 14) + 'px';
      tip.style.top = (ev.pageY + 10) + 'px';
    });
    function hide() { tip.style.display = 'none'; guide.setAttribute('visibility', 'hidden'); }
    root.addEventListener('mouseleave', hide);
    const legend = el('div', { cls: 'legend' });
    legend.appendChild(el('div', {},
      el('label', {}, el('input', { type: 'radio', name: 'kind-' + si, checked: true,
        onchange: () => { kind = 'per_point'; redraw(); } }), ' all scan points (NoW)'),
      el('label', {}, el('input', { type: 'radio', name: 'kind-' + si,
        onchange: () => { kind = 'per_sample_median'; redraw(); } }), ' per-sample medians')));
    legend.appendChild(el('hr'));
    s.curves.forEach((c) => {
      legend.appendChild(el('label', {
        onmouseenter: () => paths[c.method].classList.add('hot'),
        onmouseleave: () => paths[c.method].classList.remove('hot'),
      }, el('input', { type: 'checkbox', checked: true, 'data-method': c.method,
        onchange: (ev) => {
          visible[c.method] = ev.target.checked;
          paths[c.method].style.display = ev.target.checked ? '' : 'none';
        } }), el('span', { cls: 'swatch', style: 'background:' + methodColor(methods, c.method) }), c.method));
    });
    function redraw() { s.curves.forEach((c) => paths[c.method].setAttribute('d', pathData(c))); }
    return el('div', { cls: 'curve-box' }, root, legend);
  }

  /* ---------------------------------------------------------------- confusion */
  function confusionTable(m, title) {
    if (!m) return null;
    const cell = (v, hit) => el('td', { cls: hit ? 'hit' : 'miss' }, String(v));
    return el('table', {}, el('caption', {}, title),
      el('thead', {}, el('tr', {}, el('th', {}, 'truth \\ called'), el('th', {}, 'open'), el('th', {}, 'closed'))),
      el('tbody', {},
        el('tr', {}, el('th', {}, 'open'), cell(m[0][0], true), cell(m[0][1], false)),
        el('tr', {}, el('th', {}, 'closed'), cell(m[1][0], false), cell(m[1][1], true))));
  }
  function renderConfusion() {
    const box = document.getElementById('confusion-body');
    D.sections.forEach((s) => {
      if (!s.confusion || !s.confusion.length) return;
      box.appendChild(el('h3', {}, s.title));
      box.appendChild(el('div', { cls: 'confusion-grid' }, s.confusion.map((c) => el('div', {},
        el('div', { cls: 'method' }, el('b', {}, c.method)),
        confusionTable(c.per_eye, 'per eye'), confusionTable(c.per_image, 'per image')))));
    });
  }

  /* ---------------------------------------------------------------- ablation */
  function renderAblation() {
    const box = document.getElementById('ablation-body');
    const a = D.ablation;
    if (!a) {
      box.appendChild(el('p', { cls: 'muted' }, 'No ablation/ablation.json beside the run records ' +
        '(python -m benchmark ablate writes it).'));
      return;
    }
    a.datasets.forEach((d, i) => {
      box.appendChild(el('h3', {}, d.dataset));
      box.appendChild(recordTable(d.table, 'ablation-' + i, 'variant'));
      if (d.diff.rows.length) {
        box.appendChild(el('p', { cls: 'note' }, 'Paired differences against ' + d.base +
          ' (same samples; 95% bootstrap CI over subjects; bold where the CI excludes 0 in the better direction):'));
        box.appendChild(recordTable(d.diff, 'ablation-diff-' + i, 'variant'));
      }
    });
  }

  /* ---------------------------------------------------------------- metrics, footer */
  function renderMetrics() {
    const rows = D.metrics.map((m) => ({
      sort: [m.name, m.higher ? 1 : 0, m.unit, m.description],
      cells: [el('td', { cls: 'method' }, m.name), el('td', {}, m.higher ? 'higher is better' : 'lower is better'),
        el('td', {}, m.unit || '–'), el('td', { style: 'text-align:left;white-space:normal' }, m.description)],
    }));
    document.getElementById('metrics-body').appendChild(sortable(
      [{ title: 'metric' }, { title: 'direction', higher: true }, { title: 'unit', higher: true },
        { title: 'definition', higher: true }], rows, 'metrics-table'));
    document.getElementById('footer').textContent = 'Generated by python -m benchmark leaderboard ' +
      '--html from the run records; code revision(s) ' + D.revisions.join(', ') + ', dated ' +
      D.dates.join(', ') + '. 3D: three.js 0.147.0 (MIT), vendored.';
  }

  /* ---------------------------------------------------------------- lazy loading */
  const pending = {};
  window.EYEBENCH = {
    sampleLoaded: (payload) => { resolveLoad('s:' + payload.key, payload); },
    topologyLoaded: (payload) => { resolveLoad('t:' + payload.id, payload); },
  };
  const loaded = {};
  function resolveLoad(key, payload) {
    loaded[key] = payload;
    (pending[key] || []).forEach((f) => f(payload));
    delete pending[key];
  }
  function load(key, src) {
    if (loaded[key]) return Promise.resolve(loaded[key]);
    return new Promise((resolve, reject) => {
      const first = !pending[key];
      (pending[key] = pending[key] || []).push(resolve);
      if (!first) return;
      const tag = el('script', { src: src });
      tag.onerror = () => reject(new Error('could not load ' + src));
      document.head.appendChild(tag);
    });
  }
  async function inflate(b64) {
    const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([bin]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  async function decodePositions(enc) {
    const planes = await inflate(enc.b64);
    const n = enc.n, total = 3 * n, out = new Float32Array(total);
    for (let a = 0; a < 3; a++) {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const j = a * n + i;
        let d = planes[j] | (planes[total + j] << 8);
        if (d > 32767) d -= 65536;
        acc = ((acc + d) << 16) >> 16;
        out[3 * i + a] = acc * enc.step;
      }
    }
    return out;
  }
  const topologies = {};
  async function topologyArrays(id) {
    if (!topologies[id]) {
      const topo = await load('t:' + id, D.topologies[id]);
      topologies[id] = { faces: await decodeFaces(topo.faces), coded: topo.templates, templates: {} };
    }
    return topologies[id];
  }
  async function template(id, method) {
    const topo = await topologyArrays(id);
    if (!topo.templates[method]) topo.templates[method] = await decodePositions(topo.coded[method]);
    return topo.templates[method];
  }
  // a same-topology template moved by a similarity (4x4, row-major) plus quantised residuals
  async function decodeOnTemplate(enc, template) {
    const planes = await inflate(enc.b64);
    const n = enc.n, total = 3 * n, m = enc.tf, out = new Float32Array(total);
    for (let i = 0; i < n; i++) {
      const x = template[3 * i], y = template[3 * i + 1], z = template[3 * i + 2];
      for (let a = 0; a < 3; a++) {
        const j = a * n + i;
        let r = planes[j] | (planes[total + j] << 8);
        if (r > 32767) r -= 65536;
        out[3 * i + a] = m[4 * a] * x + m[4 * a + 1] * y + m[4 * a + 2] * z + m[4 * a + 3] + r * enc.step;
      }
    }
    return out;
  }
  // a mesh is coded on its method's template mesh or on another method's mesh of the sample
  async function decodeMesh(payload, method) {
    payload.decoded = payload.decoded || {};
    if (!payload.decoded[method]) {
      const mesh = payload.meshes[method];
      const base = mesh.base.mesh ? await decodeMesh(payload, mesh.base.mesh)
        : await template(mesh.topology, mesh.base.template);
      payload.decoded[method] = await decodeOnTemplate(mesh.pos, base);
    }
    return payload.decoded[method];
  }
  async function decodeFaces(enc) {
    const bytes = await inflate(enc.b64);
    const delta = new Int32Array(bytes.buffer, bytes.byteOffset, enc.n);
    const out = new Uint32Array(enc.n);
    let acc = 0;
    for (let i = 0; i < enc.n; i++) { acc += delta[i]; out[i] = acc; }
    return out;
  }
  async function decodeErrors(b64) {
    const q = await inflate(b64);
    const out = new Float32Array(q.length);
    for (let i = 0; i < q.length; i++) out[i] = q[i] === 255 ? NaN : q[i] * D.err_step_mm;
    return out;
  }
  const STOPS = [[0.17, 0.48, 0.71], [0.67, 0.85, 0.91], [1.0, 1.0, 0.75], [0.99, 0.68, 0.38], [0.84, 0.1, 0.11]];
  function colormap(v) {
    if (!isFinite(v)) return [0.75, 0.75, 0.75];
    const t = Math.max(0, Math.min(1, v / ERR_MAX_MM)) * (STOPS.length - 1);
    const i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i;
    return [0, 1, 2].map((k) => STOPS[i][k] * (1 - f) + STOPS[i + 1][k] * f);
  }

  /* ---------------------------------------------------------------- 3D viewer */
  const viewer = { renderer: null, scene: null, camera: null, controls: null, objects: [], failed: null };
  function ensureViewer(canvas) {
    if (viewer.renderer && viewer.renderer.domElement === canvas) return true;
    if (viewer.failed) return false;
    if (!window.THREE || !THREE.OrbitControls) { viewer.failed = 'three.js did not load'; return false; }
    let renderer;
    try {
      renderer = new THREE.WebGLRenderer({ canvas: canvas, antialias: true, preserveDrawingBuffer: true });
    } catch (err) {
      viewer.failed = 'WebGL is not available in this browser (' + err.message + ')';
      return false;
    }
    const scene = new THREE.Scene();
    scene.background = new THREE.Color(0xeef1f6);
    const camera = new THREE.PerspectiveCamera(30, 1, 0.01, 20);
    camera.position.set(0, 0, 0.75);
    scene.add(new THREE.AmbientLight(0xffffff, 0.45));
    const key = new THREE.DirectionalLight(0xffffff, 0.75);
    key.position.set(0.3, 0.4, 1.0);
    camera.add(key);
    scene.add(camera);
    const controls = new THREE.OrbitControls(camera, canvas);
    controls.addEventListener('change', () => renderer.render(scene, camera));
    Object.assign(viewer, { renderer, scene, camera, controls });
    window.addEventListener('resize', () => resizeViewer());
    return true;
  }
  function resizeViewer() {
    const c = viewer.renderer.domElement;
    const w = c.clientWidth || 600, hgt = c.clientHeight || 420;
    viewer.renderer.setSize(w, hgt, false);
    viewer.camera.aspect = w / hgt;
    viewer.camera.updateProjectionMatrix();
    viewer.renderer.render(viewer.scene, viewer.camera);
  }
  async function showMeshes(canvas, payload, method, status) {
    if (!ensureViewer(canvas)) { status.textContent = viewer.failed; return; }
    for (const o of viewer.objects) { viewer.scene.remove(o); o.geometry.dispose(); o.material.dispose(); }
    viewer.objects = [];
    const mesh = payload.meshes[method];
    const haveScan = !!payload.scan;
    const offset = haveScan && mesh ? 0.09 : 0.0;
    if (mesh) {
      const topo = await topologyArrays(mesh.topology);
      const geo = new THREE.BufferGeometry();
      geo.setAttribute('position', new THREE.BufferAttribute(await decodeMesh(payload, method), 3));
      geo.setIndex(new THREE.BufferAttribute(topo.faces, 1));
      geo.computeVertexNormals();
      const obj = new THREE.Mesh(geo, new THREE.MeshStandardMaterial({
        color: 0xd8c3b0, roughness: 0.8, metalness: 0.0, side: THREE.DoubleSide }));
      obj.position.x = -offset;
      obj.name = 'prediction';
      viewer.scene.add(obj);
      viewer.objects.push(obj);
    }
    if (haveScan) {
      const pos = await decodePositions(payload.scan.pos);
      const n = pos.length / 3;
      const err = mesh && mesh.err ? await decodeErrors(mesh.err) : null;
      const col = new Float32Array(3 * n);
      for (let i = 0; i < n; i++) {
        const c = err ? colormap(err[i]) : [0.55, 0.6, 0.68];
        col[3 * i] = c[0]; col[3 * i + 1] = c[1]; col[3 * i + 2] = c[2];
      }
      const geo = new THREE.BufferGeometry();
      geo.setAttribute('position', new THREE.BufferAttribute(pos, 3));
      geo.setAttribute('color', new THREE.BufferAttribute(col, 3));
      const obj = new THREE.Points(geo, new THREE.PointsMaterial({ size: 2.2, sizeAttenuation: false, vertexColors: true }));
      obj.position.x = offset;
      obj.name = 'scan';
      viewer.scene.add(obj);
      viewer.objects.push(obj);
      status.textContent = (mesh ? 'left: ' + method + (mesh.aligned ? ' (moved onto the scan by its 7 landmarks)' : '') : 'no mesh') +
        '; right: the scan' + (err ? ', coloured by its scan-to-mesh distance to this mesh (NoW metric, 0 to ' + ERR_MAX_MM + ' mm)' : '') + '. Drag: orbit, wheel: zoom, right-drag: pan.';
    } else {
      status.textContent = (mesh ? method + ' (no scan for this sample)' : 'no mesh for ' + method) +
        '. Drag: orbit, wheel: zoom, right-drag: pan.';
    }
    viewer.controls.target.set(0, 0, 0);
    viewer.camera.position.set(0, 0, haveScan && mesh ? 0.75 : 0.5);
    viewer.controls.update();
    resizeViewer();
  }

  /* ---------------------------------------------------------------- sample browser */
  function eyeOutcome(sample, m, e) {
    const r = sample.methods[m];
    if (!r || r.status !== 'ok') return 'none';
    const t = sample.truth[e], p = r.pred[e];
    if (t === UNKNOWN || p === UNKNOWN || p === undefined) return 'none';
    return t === p ? 'right' : 'wrong';
  }
  function stateName(v) { return v === OPEN ? 'open' : v === CLOSED ? 'closed' : '?'; }
  function renderSamples() {
    const box = document.getElementById('samples-body');
    const secs = D.sections.map((s, i) => [s, i]).filter(([s]) => s.browser && s.browser.samples.length);
    if (!secs.length) { box.appendChild(el('p', { cls: 'muted' }, 'No per-sample rows in the records.')); return; }
    const dsSel = el('select', { id: 'filter-dataset' }, secs.map(([s, i]) => el('option', { value: i }, s.title)));
    const stSel = el('select', { id: 'filter-state' }, ['all', 'open', 'closed', 'wink', 'half'].map((v) => el('option', { value: v }, v)));
    const mSel = el('select', { id: 'filter-method' });
    const rSel = el('select', { id: 'filter-result' },
      [['all', 'any result'], ['right', 'every labelled eye right'], ['wrong', 'some eye wrong'],
        ['wrong0', 'eye 0 wrong'], ['wrong1', 'eye 1 wrong'], ['right0', 'eye 0 right'], ['right1', 'eye 1 right']]
        .map(([v, t]) => el('option', { value: v }, t)));
    const count = el('span', { id: 'sample-count', cls: 'muted' });
    const note = el('p', { cls: 'note', id: 'sample-note' });
    const list = el('div', { cls: 'sample-list', id: 'sample-list' });
    const detail = el('div', { cls: 'detail', id: 'sample-detail' }, el('p', { cls: 'muted' }, 'Pick a sample.'));
    box.appendChild(note);
    box.appendChild(el('div', { cls: 'controls' },
      el('label', {}, 'dataset', dsSel), el('label', {}, 'eye state', stSel),
      el('label', {}, 'method', mSel), el('label', {}, 'result', rSel), count));
    box.appendChild(el('div', { cls: 'browser' }, list, detail));
    let current = null;
    function section() { return D.sections[Number(dsSel.value)]; }
    function fillMethods() {
      const b = section().browser;
      mSel.textContent = '';
      b.methods.forEach((m) => mSel.appendChild(el('option', { value: m }, m)));
      const s = section();
      note.textContent = 'Showing ' + b.samples.length + ' of ' + b.n_total + ' samples of ' + s.title +
        ' (at most ' + b.n_max + ' per dataset, chosen deterministically in turn from each eye state). ' +
        (b.images ? 'Input images shown: the dataset card allows redistribution. '
          : 'No input images: the dataset card says research-only. ') +
        (b.meshes ? '' : 'No meshes: research-only data in a folder git tracks. ') +
        'Chips: per method and eye, green right, red wrong, grey unlabelled or no result. ' +
        'Eye 0 = landmarks 37-42, eye 1 = landmarks 43-48.';
    }
    function matches(sample) {
      const st = stSel.value, m = mSel.value, r = rSel.value;
      if (st !== 'all' && sample.category !== st) return false;
      if (r === 'all') return true;
      const o = [eyeOutcome(sample, m, 0), eyeOutcome(sample, m, 1)];
      if (r === 'right') return o.includes('right') && !o.includes('wrong');
      if (r === 'wrong') return o.includes('wrong');
      if (r === 'wrong0') return o[0] === 'wrong';
      if (r === 'wrong1') return o[1] === 'wrong';
      if (r === 'right0') return o[0] === 'right';
      if (r === 'right1') return o[1] === 'right';
      return true;
    }
    function drawList() {
      const b = section().browser;
      list.textContent = '';
      const shown = b.samples.filter(matches);
      count.textContent = shown.length + ' of ' + b.samples.length + ' shown';
      shown.forEach((sample) => {
        const chips = b.methods.map((m) => el('span', { title: m },
          [0, 1].map((e) => el('span', { cls: 'chip ' + eyeOutcome(sample, m, e) }))));
        const item = el('div', { cls: 'sample-item', 'data-id': sample.id, 'data-category': sample.category,
          onclick: () => select(sample, item) },
        el('span', { cls: 'sid' }, sample.id), el('span', { cls: 'cat' }, sample.category), el('span', {}, chips));
        list.appendChild(item);
      });
    }
    async function select(sample, item) {
      list.querySelectorAll('.sample-item.active').forEach((n) => n.classList.remove('active'));
      if (item) item.classList.add('active');
      current = sample;
      const b = section().browser;
      detail.textContent = '';
      detail.appendChild(el('p', { cls: 'muted' }, 'loading ' + sample.id + ' …'));
      const payload = await load('s:' + Number(dsSel.value) + '/' + sample.id, sample.file);
      if (current !== sample) return;
      detail.textContent = '';
      const pic = payload.image ? el('img', { src: payload.image, alt: sample.id })
        : el('div', { cls: 'no-image' }, b.images ? 'no image' : 'Input image not shown: research-only data (dataset card: redistributable = false).');
      const rows = b.methods.map((m) => {
        const r = sample.methods[m];
        const cells = [el('td', { cls: 'method' }, m)];
        for (let e = 0; e < 2; e++) {
          const o = eyeOutcome(sample, m, e);
          const txt = r.status === 'ok' ? fmt(r.op[e]) + ' ' + stateName(r.pred[e]) : r.status;
          cells.push(el('td', { cls: o === 'right' ? 'state-right' : o === 'wrong' ? 'state-wrong' : null }, txt));
        }
        cells.push(el('td', {}, r.s2m === null || r.s2m === undefined ? '–' : fmt(r.s2m, 2)));
        return { sort: [m, r.op[0], r.op[1], r.s2m], cells: cells };
      });
      const label = (e) => (sample.truth[e] === UNKNOWN && sample.gt[e] !== null ? 'half-closed' : stateName(sample.truth[e])) +
        (sample.gt[e] !== null ? ' (openness ' + fmt(sample.gt[e]) + ')' : '');
      const truth = 'truth: eye 0 ' + label(0) + ', eye 1 ' + label(1) +
        '; threshold ' + b.threshold;
      detail.appendChild(el('div', { cls: 'detail-top' }, pic, el('div', {},
        el('h3', {}, sample.id + ' — ' + sample.category), el('p', { cls: 'note' }, 'subject ' + sample.subject + '; ' + truth),
        sortable([{ title: 'method' }, { title: 'eye 0 openness', higher: true }, { title: 'eye 1 openness', higher: true },
          { title: 'S2M median (mm)', higher: false }], rows, 'sample-table'))));
      const withMesh = b.methods.filter((m) => payload.meshes[m]);
      const canvas = viewer.canvas || (viewer.canvas = el('canvas', { id: 'viewer' }));
      canvas.removeAttribute('data-ready');
      const status = el('p', { cls: 'note', id: 'viewer-status' });
      const bar = el('div', { cls: 'viewer-bar' }, el('span', { cls: 'muted' }, '3D:'));
      withMesh.forEach((m, i) => bar.appendChild(el('button', { cls: i === 0 ? 'on' : null, 'data-method': m,
        onclick: (ev) => {
          bar.querySelectorAll('button').forEach((n) => n.classList.remove('on'));
          ev.target.classList.add('on');
          showMeshes(canvas, payload, m, status);
        } }, m)));
      if (payload.scan) {
        const grad = 'linear-gradient(to right,' + STOPS.map((c) => 'rgb(' + c.map((v) => Math.round(255 * v)).join(',') + ')').join(',') + ')';
        bar.appendChild(el('span', { cls: 'muted', style: 'margin-left:12px' }, '0 mm '));
        bar.appendChild(el('span', { cls: 'colorbar', style: 'background:' + grad }));
        bar.appendChild(el('span', { cls: 'muted' }, ' ≥' + ERR_MAX_MM + ' mm'));
      }
      detail.appendChild(bar);
      if (withMesh.length || payload.scan) {
        detail.appendChild(canvas);
        detail.appendChild(status);
        const first = withMesh.includes(mSel.value) ? mSel.value : withMesh[0];
        bar.querySelectorAll('button').forEach((n) => n.classList.toggle('on', n.getAttribute('data-method') === first));
        await showMeshes(canvas, payload, first, status);
        canvas.setAttribute('data-ready', '1');
      } else {
        detail.appendChild(el('p', { cls: 'muted' }, 'No mesh stored for this sample.'));
      }
    }
    dsSel.addEventListener('change', () => { fillMethods(); drawList(); });
    [stSel, mSel, rSel].forEach((s) => s.addEventListener('change', drawList));
    fillMethods();
    drawList();
  }

  renderIntro();
  renderTables();
  renderCurves();
  renderConfusion();
  renderAblation();
  renderSamples();
  renderMetrics();
  document.body.setAttribute('data-ready', '1');
}());

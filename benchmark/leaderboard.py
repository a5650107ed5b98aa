"""Leaderboard rendering: run records -> ``results/LEADERBOARD.md`` and a console table.

Room: presentation of stored records only (it never runs or scores anything). Metric
titles, units and directions come from ``benchmark.scoring.METRICS``; a column's best value
is bold, every value shows its bootstrap CI.

Records are ranked together only when they cover the same samples: each record key
(dataset, split, instance) is one section, and records over another sample set (a
``--limit`` run, a changed folder) get a section of their own, titled as not comparable.
Failure reasons are shown on one line each.

Under a section's table come the eye checks of issue 16, re-aggregated from the records'
stored per-sample rows (no prediction is re-scored): fair coverage (eye metrics over the
samples every method covered), per-source results where closed and open labels come from
different photo sources, and the masked-eye shortcut probe (``docs/metrics.md``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import metrics.probes as probes
from benchmark.cache import atomic_write_bytes
from benchmark.results import SAMPLES_FILE, RunRecord, load_records, one_line
from benchmark.scoring import METRICS, MetricSpec, ScoreTable, aggregate
from benchmark.types import EYE_CLOSED, EYE_OPEN, EYE_UNKNOWN

LEADERBOARD_FILE = "LEADERBOARD.md"

#: Rows are sorted by the first of these metrics that a dataset has.
SORT_ORDER = ("eye_f1", "image_f1", "s2m_median_mm", "realy_all_mm", "nme_2d")


def _fmt(spec: MetricSpec, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return spec.fmt.format(value)


def _cell(spec: MetricSpec, entry: dict | None, best: bool, with_ci: bool = True) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    text = _fmt(spec, entry["value"])
    if best:
        text = f"**{text}**"
    if with_ci and entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        text += f" [{_fmt(spec, entry['ci_low'])}, {_fmt(spec, entry['ci_high'])}]"
    return text


def _columns(records: Sequence[RunRecord], headline_only: bool = True) -> list[MetricSpec]:
    present = {name for r in records for name in r.metrics}
    specs = [METRICS.get(n) for n in METRICS.names() if n in present]
    return [s for s in specs if s.headline or not headline_only]


def _best(spec: MetricSpec, records: Sequence[RunRecord]) -> float | None:
    vals = [r.metric(spec.name) for r in records]
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals or spec.group == "run":
        return None
    return max(vals) if spec.higher_is_better else min(vals)


def _sorted(records: Sequence[RunRecord]) -> list[RunRecord]:
    for name in SORT_ORDER:
        if any(r.metric(name) is not None for r in records):
            spec = METRICS.get(name)
            sign = -1.0 if spec.higher_is_better else 1.0

            def key(r: RunRecord, name: str = name, sign: float = sign) -> tuple:
                v = r.metric(name)
                return (v is None or math.isnan(v), sign * (v or 0.0), r.method)

            return sorted(records, key=key)
    return sorted(records, key=lambda r: r.method)


def group_records(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records by ``<dataset>__<split>``, in a stable order."""
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[r.key].append(r)
    return dict(sorted(groups.items()))


def _same_set(a: RunRecord, b: RunRecord) -> bool:
    """Whether two records cover the same samples (older records: same count and limit)."""
    if a.sample_set.get("digest") and b.sample_set.get("digest"):
        return a.sample_set["digest"] == b.sample_set["digest"]
    return a.n_samples == b.n_samples and a.params.get("limit") == b.params.get("limit")


def sections(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records by key, each key split by sample set; ids ``<key>`` and ``<key>~<digest8>``.

    The reference set of a key is the one with the most samples (then the most records); it
    keeps the key as its id and every non-``ok`` record. Other sets follow it, each with the
    id ``<key>~<first 8 digits of its sample-set digest>`` (``~n<count>`` for old records).
    """
    out: dict[str, list[RunRecord]] = {}
    for key, recs in group_records(records).items():
        sets: list[list[RunRecord]] = []
        for r in (r for r in recs if r.status == "ok"):
            home = next((g for g in sets if _same_set(g[0], r)), None)
            if home is None:
                sets.append([r])
            else:
                home.append(r)
        sets.sort(key=lambda g: (-max(r.n_samples for r in g), -len(g), g[0].sample_set_id))
        out[key] = (sets[0] if sets else []) + [r for r in recs if r.status != "ok"]
        for g in sets[1:]:
            digest = g[0].sample_set.get("digest")
            out[f"{key}~{digest[:8] if digest else f'n{g[0].n_samples}'}"] = g
    return out


def section_title(section_id: str, recs: Sequence[RunRecord]) -> str:
    """A section's heading: ``dataset / split``, the root and the sample set when needed.

    The root is shown for instance-keyed data; a set other than the key's reference set is
    titled as not comparable with the section above.
    """
    r = recs[0]
    title = f"{r.dataset} / {r.split}"
    if r.dataset_instance.get("key"):
        title += f" (`{r.dataset_instance.get('root')}`)"
    if "~" in section_id:
        limit = r.params.get("limit")
        title += (f" — other sample set: {r.n_samples} samples"
                  + (f", --limit {limit}" if limit else "") + "; not comparable with the "
                  "section above")
    return title


def _title(spec: MetricSpec) -> str:
    arrow = "↑" if spec.higher_is_better else "↓"
    unit = f" ({spec.unit})" if spec.unit and spec.unit != "s" else ""
    return f"{spec.title}{unit} {arrow}"


def realy_table(records: Sequence[RunRecord]) -> list[str]:
    """REALY's own report (mean / median / std per region, and "all") where records hold it.

    Returns:
        Markdown lines (a table and a blank line), or none when no record has REALY metrics.
    """
    from metrics.realy import REALY_REGIONS

    recs = [r for r in records if r.metric("realy_all_mm") is not None]
    if not recs:
        return []
    lines = ["REALY per region (mm; mean / median / std over images, std with ddof 1, as "
             "REALY reports them):", "",
             "| method | " + " | ".join(REALY_REGIONS) + " | all |",
             "|---" * (len(REALY_REGIONS) + 2) + "|"]

    def num(name: str) -> str:
        v = r.metric(name)
        return "–" if v is None or math.isnan(v) else f"{v:.3f}"

    for r in _sorted(recs):
        cells = [" / ".join(num(f"realy_{g}{s}_mm") for s in ("", "_median", "_std"))
                 for g in REALY_REGIONS]
        lines.append(f"| `{r.method}` | " + " | ".join(cells) + f" | {num('realy_all_mm')} |")
    return lines + [""]


#: Footnote of each method mark, in display order.
MARK_NOTES = {
    "ᵒ": "ᵒ eyes open by construction (the method predicts no eyelid state).",
    "ᶜ": "ᶜ trained on this dataset's training split (subjects disjoint from the evaluated "
         "split).",
    "ᵐ": "ᵐ built on the face model this dataset's ground truth comes from: it can express "
         "most of the true shape, so its scan-to-mesh error is not comparable with other "
         "models' here (see the dataset card).",
    "ʷ": "ʷ the published method run by our adapter on its official files, which a user "
         "supplies (research material, never in the repository; paths and sha256 in the run "
         "record):",
}


def method_marks(record: RunRecord, dataset: str) -> list[str]:
    """The footnote marks of a method's row (keys of :data:`MARK_NOTES`)."""
    card, marks = record.method_card, []
    if card.get("eyes_open_by_construction"):
        marks.append("ᵒ")
    if dataset in card.get("training_datasets", []):
        marks.append("ᶜ")
    if card.get("required_files"):
        marks.append("ʷ")
    family = record.dataset_card.get("gt_face_model", "")
    if family and str(card.get("topology", "")).split("-")[0] == family:
        marks.append("ᵐ")
    return marks


def mark_notes(records: Sequence[RunRecord], dataset: str) -> list[str]:
    """The footnotes of the marks that appear on these rows."""
    used = {m for r in records for m in method_marks(r, dataset)}
    notes = [note for mark, note in MARK_NOTES.items() if mark in used]
    files = [f"`{r.method}`: " + "; ".join(r.method_card["required_files"])
             for r in records if "ʷ" in method_marks(r, dataset)]
    return [f"{n} {' — '.join(files)}." if n.startswith("ʷ") else n for n in notes]


def render_markdown(records: Sequence[RunRecord], plots: dict[str, list[Path]] | None = None,
                    output_dir: Path | None = None) -> str:
    """The whole LEADERBOARD.md text for a set of records."""
    plots = plots or {}
    lines = [
        "# Leaderboard",
        "",
        "Generated by `python -m benchmark leaderboard` from the run records under `runs/`; "
        "do not edit by hand.",
        "",
    ]
    groups = sections(records)
    if not groups:
        lines += ["No run records yet: `python -m benchmark run --methods all`.", ""]
    thresholds = sorted({r.params.get("closed_threshold") for r in records
                         if r.params.get("closed_threshold") is not None})
    boots = sorted({r.params.get("bootstrap") for r in records if r.params.get("bootstrap")})
    if thresholds:
        lines += [
            "Eye state is read from each reconstructed mesh: per eye, openness = mean 3D "
            "distance of the eyelid landmark pairs (37-41, 38-40 / 43-47, 44-46) divided by the "
            f"eye-corner distance; an eye is **closed when openness < "
            f"{', '.join(f'{t:g}' for t in thresholds)}**. F1 treats *closed* as the positive "
            "class; half-closed eyes are left out of the binary scores and count in the "
            "openness error. Brackets: 95% percentile bootstrap CI over subjects"
            + (f" ({', '.join(str(b) for b in boots)} resamples)." if boots else "."),
            "",
        ]
    if any(r.metric("eye_f1_readout") is not None for r in records):
        lines += [
            "*eye F1 (own readout)*: the same per-eye F1 read from the method's own closed "
            "probability at 0.5 instead of its mesh (MediaPipe's eyeBlink blendshapes, the "
            "eye-state detector of `fit-landmarks-elam`); – for methods that expose none.",
            "",
        ]
    for key, recs in groups.items():
        ok = [r for r in recs if r.status == "ok"]
        not_ok = [r for r in recs if r.status != "ok"]
        dataset = recs[0].dataset
        n = max((r.n_samples for r in ok), default=0)
        card = (ok or not_ok)[0].dataset_card.get("card_file", "")
        lines += [f"## {section_title(key, recs)}", ""]
        desc = (ok or not_ok)[0].dataset_card.get("description", "")
        lines += [f"{desc} {n} samples; card: `data_cards/{card}`." if card else desc, ""]
        if ok:
            cols = _columns(ok)
            best = {s.name: _best(s, ok) for s in cols}
            lines.append("| method | " + " | ".join(_title(s) for s in cols) + " |")
            lines.append("|---" * (len(cols) + 1) + "|")
            for r in _sorted(ok):
                cells = []
                for s in cols:
                    entry = r.metrics.get(s.name)
                    is_best = (best[s.name] is not None and entry is not None
                               and entry.get("value") == best[s.name])
                    cells.append(_cell(s, entry, is_best))
                name = " ".join([f"`{r.method}`", *method_marks(r, dataset)])
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
            lines += realy_table(ok)
            notes = mark_notes(ok, dataset)
            failed = [r for r in ok if r.n_error or r.n_no_face]
            for r in failed:
                notes.append(f"`{r.method}`: {r.n_no_face} no face, {r.n_error} errors out of "
                             f"{r.n_samples} (metrics cover the rest).")
            lines += [f"- {n}" for n in notes]
            if notes:
                lines.append("")
            lines += eye_check_lines(ok, output_dir)
        for p in plots.get(key, []):
            rel = p.relative_to(output_dir) if output_dir else p
            lines += [f"![{p.stem.replace('_', ' ')}]({rel.as_posix()})", ""]
        if not_ok:
            lines += ["Not evaluated:", ""]
            for r in sorted(not_ok, key=lambda r: r.method):
                fix = f" Fix: {one_line(r.fix)}." if r.fix else ""
                reason = one_line(r.reason).rstrip(".")
                lines.append(f"- `{r.method}` — {r.status}: {reason}.{fix}")
            lines.append("")
    specs = [METRICS.get(n) for n in METRICS.names()]
    lines += ["## Metrics", "", "| metric | direction | unit | definition |", "|---|---|---|---|"]
    for s in specs:
        direction = "higher is better" if s.higher_is_better else "lower is better"
        lines.append(f"| `{s.name}` | {direction} | {s.unit or '–'} | {s.description} |")
    lines.append("")
    revs = sorted({r.provenance.get("git_revision", "?") for r in records})
    dates = sorted({r.provenance.get("date", "?")[:10] for r in records})
    if records:
        lines += [f"Records from code revision(s) {', '.join(revs)}, dated {', '.join(dates)}.",
                  ""]
    return "\n".join(lines)


def render_console(records: Sequence[RunRecord]) -> str:
    """A plain-text table per dataset (what ``run`` prints at the end)."""
    out = []
    for key, recs in sections(records).items():
        ok = [r for r in recs if r.status == "ok"]
        out.append(f"== {section_title(key, recs).replace('`', '')} ==")
        if ok:
            cols = _columns(ok)
            header = ["method"] + [_title(s) for s in cols]
            body = [[r.method] + [_cell(s, r.metrics.get(s.name), False) for s in cols]
                    for r in _sorted(ok)]
            widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
            for row in [header] + body:
                out.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
            out.append("[lo, hi]: 95% bootstrap CI over subjects.")
        for r in sorted((r for r in recs if r.status != "ok"), key=lambda r: r.method):
            out.append(f"{r.method}: {r.status}: {one_line(r.reason)}"
                       + (f" (fix: {one_line(r.fix)})" if r.fix else ""))
        out.append("")
    return "\n".join(out)


def write_leaderboard(output_dir: Path, records: Sequence[RunRecord] | None = None,
                      plots: dict[str, list[Path]] | None = None) -> Path:
    """Renders ``<output_dir>/LEADERBOARD.md`` from the records found there."""
    output_dir = Path(output_dir)
    if records is None:
        records = load_records(output_dir)
    path = output_dir / LEADERBOARD_FILE
    atomic_write_bytes(path, render_markdown(records, plots, output_dir).encode())
    return path


# ----------------------------------------------------------------------------------------
# Eye checks under a section's table (issue 16): fair coverage, per-source results, and the
# masked-eye shortcut probe. Read from the records' per-sample rows (samples.parquet).
# ----------------------------------------------------------------------------------------

#: The masked-eye probe's dataset (benchmark/datasets/masked.py): its section gets the probe.
PROBE_DATASET = "real-faces-val-eyes-masked"
#: Eye metrics recomputed over the samples every compared method covered.
FAIR_METRICS = ("eye_f1", "eye_acc", "image_f1")
#: Display names of photo sources (the ``<source>:`` prefix of subject ids).
SOURCE_NAMES = {"cew": "CEW", "utk": "UTKFace"}


def _record_rows(r: RunRecord, output_dir: Path | None) -> list[dict] | None:
    """A record's per-sample rows (NaN cells as None), or None when they are not stored."""
    if r.rows is not None:
        rows = r.rows
    elif output_dir is not None and (r.folder(output_dir) / SAMPLES_FILE).is_file():
        frame = r.samples_frame(output_dir)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    else:
        return None
    return [{k: v for k, v in row.items()
             if v is not None and not (isinstance(v, float) and math.isnan(v))} for row in rows]


def _source(row: dict) -> str | None:
    subject = str(row.get("subject", ""))
    return subject.split(":", 1)[0] if ":" in subject else None


def _pct(rate: probes.Rate) -> str:
    return "–" if not rate.n else f"{100 * rate.rate:.1f}% ({rate.k}/{rate.n})"


def _pp(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.1f} pp"


def _calls(rows: list[dict], prefix: str) -> np.ndarray | None:
    """Per-image calls, closed when both eyes are; None when no row has that readout.

    ``prefix`` is ``eye_pred_`` (the mesh) or ``prob_closed_`` (the method's own belief).
    """
    if not any(f"{prefix}0" in row for row in rows):
        return None
    per_eye = np.full((len(rows), 2), np.nan)
    for i, row in enumerate(rows):
        for e in range(2):
            v = row.get(f"{prefix}{e}")
            if v is not None:
                per_eye[i, e] = v
    if prefix == "prob_closed_":
        per_eye = probes.states_from_prob(per_eye).astype(np.float64)
        per_eye[per_eye == EYE_UNKNOWN] = np.nan
    both = np.where(np.isnan(per_eye).any(axis=1), EYE_UNKNOWN,
                    np.all(per_eye == EYE_CLOSED, axis=1).astype(np.int64))
    return both


def _eye_calls(rows: list[dict], prefix: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Per-eye (truth, call, source) of ok rows for one readout, or None without it."""
    if not any(f"{prefix}0" in row for row in rows):
        return None
    truth, calls, sources = [], [], []
    for row in rows:
        for e in range(2):
            v = row.get(f"{prefix}{e}")
            if v is None:
                v = EYE_UNKNOWN
            elif prefix == "prob_closed_":
                v = int(probes.states_from_prob(v))
            truth.append(row.get(f"eye_true_{e}", EYE_UNKNOWN))
            calls.append(v)
            sources.append(_source(row) or "")
    return np.asarray(truth), np.asarray(calls), sources


def _confounded_sources(rows: list[dict]) -> tuple[str, str] | None:
    """(closed-only source, open-only source) when every source holds one label, else None."""
    labels: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        src = _source(row)
        if src is None:
            return None
        if row.get("image_true", EYE_UNKNOWN) != EYE_UNKNOWN:
            labels[src].add(int(row["image_true"]))
    closed = [s for s, v in labels.items() if v == {EYE_CLOSED}]
    opened = [s for s, v in labels.items() if v == {EYE_OPEN}]
    if len(labels) == 2 and len(closed) == 1 and len(opened) == 1:
        return closed[0], opened[0]
    return None


def fair_coverage_lines(ok: Sequence[RunRecord], rows: dict[str, list[dict]]) -> list[str]:
    """Eye metrics over the samples every compared method covered, beside its own samples.

    Args:
        ok: the section's ``ok`` records.
        rows: method -> per-sample rows (records without stored rows are absent).

    Returns:
        Markdown lines (empty when fewer than two methods have rows or no eye metric applies).
    """
    recs = [r for r in ok if r.method in rows and any(r.metric(n) is not None
                                                       for n in FAIR_METRICS)]
    if len(recs) < 2:
        return []
    covered = {r.method: [row["sample_id"] for row in rows[r.method] if row["status"] == "ok"]
               for r in recs}
    common, excluded = probes.common_ids(covered)
    recs = [r for r in recs if r.method not in excluded]
    if len(recs) < 2:
        return []
    names = [n for n in FAIR_METRICS if any(r.metric(n) is not None for r in recs)]
    specs = [METRICS.get(n) for n in names]
    header = (["method", "own coverage"] + [f"{_title(s)}, own samples" for s in specs[:1]]
              + [f"{_title(s)}, common samples" for s in specs])
    lines = [f"Fair coverage: eye metrics over the {len(common)} samples that all "
             f"{len(recs)} methods below covered (a method gains nothing by failing on hard "
             "images; methods that cover everything are scored on the same samples).", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in _sorted(recs):
        sel = [row for row in rows[r.method] if row["sample_id"] in common]
        table = ScoreTable(rows=sel, distances={})
        boot = int(r.params.get("bootstrap") or 0)
        values = aggregate(table, n_boot=boot, seed=int(r.params.get("seed") or 0),
                           names=names) if sel else {}
        n_all = len(rows[r.method])
        cells = [f"`{r.method}`",
                 f"{len(covered[r.method]) / max(n_all, 1):.0%} ({len(covered[r.method])}/{n_all})",
                 _cell(specs[0], r.metrics.get(specs[0].name), False)]
        for s in specs:
            v = values.get(s.name)
            cells.append(_cell(s, v.as_dict() if v is not None else None, False))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if excluded:
        lines += [f"Left out (covered no sample): {', '.join(f'`{m}`' for m in excluded)}.", ""]
    return lines


def per_source_lines(ok: Sequence[RunRecord], rows: dict[str, list[dict]]) -> list[str]:
    """Closed-eye recall on the closed source and false-close rate on the open source.

    Printed for datasets whose closed and open labels come from different photo sources
    (``real-faces-val``), beside the pooled eye F1. Per eye; mesh readout and, where a
    method reports one, its own readout (``prob_closed_*`` >= 0.5).
    """
    recs = [r for r in ok if r.method in rows]
    pair = next((p for p in (_confounded_sources(rows[r.method]) for r in recs) if p), None)
    if pair is None:
        return []
    closed_src, open_src = pair
    cname, oname = (SOURCE_NAMES.get(s, s) for s in pair)
    lines = [f"Per source (closed eyes all come from {cname}, open eyes all from {oname}, so "
             "a method can score by recognising the source; per eye):", "",
             f"| method | eye F1 (pooled) | closed-eye recall, {cname} | false-close rate, "
             f"{oname} | own readout: recall, {cname} | own readout: false-close, {oname} |",
             "|---|---|---|---|---|---|"]
    for r in _sorted(recs):
        good = [row for row in rows[r.method] if row["status"] == "ok"]
        cells = [f"`{r.method}`", _cell(METRICS.get("eye_f1"), r.metrics.get("eye_f1"), False)]
        for prefix in ("eye_pred_", "prob_closed_"):
            got = _eye_calls(good, prefix)
            if got is None:
                cells += ["–", "–"]
                continue
            sc = probes.per_source_scores(got[0], got[1], got[2], closed_src, open_src)
            cells += [_pct(sc.recall), _pct(sc.false_close)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def probe_lines(ok: Sequence[RunRecord], rows: dict[str, list[dict]]) -> list[str]:
    """The masked-eye shortcut probe: share of masked faces called closed, per source.

    A face counts as called closed when both its eyes are (mesh readout; own readout:
    ``prob_closed_*`` >= 0.5). The gap is the first source's rate minus the second's, in
    percentage points; a method that reads eyes has a gap near 0.
    """
    recs = [r for r in ok if r.method in rows]
    sources = sorted({s for r in recs for row in rows[r.method]
                      if (s := _source(row)) is not None})
    if len(recs) == 0 or len(sources) != 2:
        return []
    a, b = sources
    an, bn = SOURCE_NAMES.get(a, a), SOURCE_NAMES.get(b, b)
    lines = ["Masked-eye shortcut probe: both eye regions painted over (`data_cards/"
             "real-faces-eyes-masked.md`); share of masked faces called closed per source "
             "(both eyes closed). A method that reads eyes calls both sources closed at the "
             "same rate: the gap should be near 0.", "",
             f"| method | {an} called closed | {bn} called closed | gap | own readout: {an} | "
             f"own readout: {bn} | own readout: gap |", "|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: r.method):
        good = [row for row in rows[r.method] if row["status"] == "ok"]
        groups = [_source(row) or "" for row in good]
        cells = [f"`{r.method}`"]
        for prefix in ("eye_pred_", "prob_closed_"):
            calls = _calls(good, prefix)
            if calls is None:
                cells += ["–", "–", "–"]
                continue
            rates = probes.closed_call_rates(calls, groups)
            ra = rates.get(a, probes.Rate(0, 0, float("nan")))
            rb = rates.get(b, probes.Rate(0, 0, float("nan")))
            cells += [_pct(ra), _pct(rb), _pp(probes.rate_gap_pp(ra, rb))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def eye_check_lines(ok: Sequence[RunRecord], output_dir: Path | None) -> list[str]:
    """Every eye check that applies to a section (markdown lines, possibly none)."""
    rows = {}
    for r in ok:
        got = _record_rows(r, output_dir)
        if got is not None:
            rows[r.method] = got
    if not rows:
        return []
    lines: list[str] = []
    if ok and ok[0].dataset == PROBE_DATASET:
        lines += probe_lines(ok, rows)
    else:
        lines += per_source_lines(ok, rows)
    return lines + fair_coverage_lines(ok, rows)

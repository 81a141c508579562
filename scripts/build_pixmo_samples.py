"""Build data_samples/pixmo/: a few rows of every PixMo dataset in its real schema, with small local images.

    python scripts/build_pixmo_samples.py                  # rewrites data_samples/pixmo (README.md is kept)
    python scripts/build_pixmo_samples.py --out /tmp/pixmo

Every file is written the way the Hub serves it: parquet, one folder per dataset, files named like the Hub's
(``train-00000-of-00001.parquet``; pixmo-docs has a folder per config), with the column names and feature types of
each dataset card (``datasets.Features`` travel inside the parquet file, so ``load_dataset`` reads them back with the
same types). The images are drawn here with PIL (coloured shapes whose centres ARE the points, analog clocks whose
hands show the time, a chart, a table, a diagram, a document) and saved under ``images/``; the rows name them by a
path relative to the sample folder (``images/scene_0.png``), which the loaders resolve with their ``base_url``
argument (a local test server, or a ``file://`` URL). Deterministic: the same code and library versions give the same
bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data_samples" / "pixmo"
BACKGROUND = (238, 236, 230)
RED, BLUE, GREEN, YELLOW = (215, 45, 45), (45, 85, 210), (40, 160, 70), (235, 195, 30)
ORANGE, PURPLE = (240, 130, 25), (135, 60, 175)

# --------------------------------------------------------------------------------------------------------------------
# Scenes: (kind, colour, centre x px, centre y px, half size px). Points in the rows are these centres.
# --------------------------------------------------------------------------------------------------------------------

SCENES = {
    "scene_0.png": ((160, 120), [("circle", RED, 30, 40, 10), ("circle", RED, 70, 92, 10), ("circle", RED, 52, 18, 9),
                                 ("square", BLUE, 125, 60, 12)]),
    "scene_1.png": ((160, 120), [("triangle", GREEN, 40, 80, 13), ("triangle", GREEN, 100, 30, 13),
                                 ("circle", YELLOW, 130, 95, 11)]),
    "scene_2.jpg": ((160, 120), [("square", BLUE, 30, 30, 11), ("square", BLUE, 82, 28, 11),
                                 ("square", BLUE, 30, 86, 11), ("square", BLUE, 122, 90, 11)]),
    "eval_0.png": ((80, 60), [("circle", ORANGE, 20, 20, 8), ("circle", ORANGE, 60, 40, 8)]),
    "eval_1.png": ((80, 60), [("square", PURPLE, 40, 30, 10)]),
}


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, colour: tuple, x: float, y: float, r: float) -> None:
    box = (x - r, y - r, x + r, y + r)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=colour)


def scene_image(name: str) -> Image.Image:
    (width, height), shapes = SCENES[name]
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for shape in shapes:
        draw_shape(draw, *shape)
    return img


def centres(name: str, kind: str | None = None, colour: tuple | None = None, percent: bool = True) -> list[dict]:
    """The centres of a scene's shapes as [{"x", "y"}]: percent of width/height (0-100) or pixels."""
    (width, height), shapes = SCENES[name]
    out = []
    for k, c, x, y, _ in shapes:
        if (kind is None or k == kind) and (colour is None or c == colour):
            out.append({"x": round(x / width * 100, 3), "y": round(y / height * 100, 3)} if percent else
                       {"x": float(x), "y": float(y)})
    return out


def masks(name: str) -> list[list[list[bool]]]:
    """One boolean [H][W] mask per shape of a scene (pixmo-points-eval's masks)."""
    (width, height), shapes = SCENES[name]
    out = []
    for shape in shapes:
        img = Image.new("1", (width, height), 0)
        draw_shape(ImageDraw.Draw(img), shape[0], 1, *shape[2:])
        out.append([[bool(img.getpixel((i, j))) for i in range(width)] for j in range(height)])
    return out


# --------------------------------------------------------------------------------------------------------------------
# Clocks: pixmo-clocks has no images on the Hub (its card: watch faces are rendered from the metadata with facer.io);
# we draw simple analog faces so that the sample has something to show.
# --------------------------------------------------------------------------------------------------------------------

CLOCKS = [  # example_id, watchface_id, watchface_name, watch_time, time_format, shows_seconds, h/m/s visible, text
    ("Q3rTz81bLm/003_2021-03-14T08:15:30.120431_roundclassic", "Q3rTz81bLm", "roundclassic",
     "003_2021-03-14T08:15:30", "Without AM/PM", True, 8, 15, 30, "8:15:30"),
    ("Vd90kPz2Aa/005_2022-11-02T14:50:07.532001_squaresport", "Vd90kPz2Aa", "squaresport",
     "005_2022-11-02T14:50:07", "Without AM/PM", False, 2, 50, -1, "2:50"),
    ("mN4cX7yQwE/004_2020-07-25T23:57:04.973962_nightdial", "mN4cX7yQwE", "nightdial",
     "004_2020-07-25T23:57:04", "With AM/PM", True, 23, 57, 4, "11:57:04 PM"),
]


def clock_file_name(example_id: str) -> str:
    """The sample's image name for a clock row (the loader's ``clock_image_name``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", example_id) + ".png"


def clock_image(hour: int, minute: int, second: int | None) -> Image.Image:
    size, c = 96, 48
    img = Image.new("RGB", (size, size), (30, 32, 40))
    draw = ImageDraw.Draw(img)
    draw.ellipse((4, 4, size - 4, size - 4), fill=(245, 243, 235), outline=(120, 120, 120), width=3)
    for tick in range(12):
        a = tick / 12 * 2 * math.pi
        draw.line((c + 36 * math.sin(a), c - 36 * math.cos(a), c + 41 * math.sin(a), c - 41 * math.cos(a)),
                  fill=(40, 40, 40), width=2)
    hands = [((hour % 12 + minute / 60) / 12, 22, 4, (20, 20, 20)),
             ((minute + (second or 0) / 60) / 60, 33, 3, (20, 20, 20))]
    if second is not None:
        hands.append((second / 60, 38, 1, (200, 30, 30)))
    for turn, length, width, colour in hands:
        a = turn * 2 * math.pi
        draw.line((c, c, c + length * math.sin(a), c - length * math.cos(a)), fill=colour, width=width)
    draw.ellipse((c - 3, c - 3, c + 3, c + 3), fill=(20, 20, 20))
    return img


# --------------------------------------------------------------------------------------------------------------------
# Documents (pixmo-docs keeps its images inside the rows).
# --------------------------------------------------------------------------------------------------------------------


def font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def bar_chart(values: dict[str, int], title: str) -> Image.Image:
    img = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 4), title, fill="black", font=font())
    draw.line((20, 100, 150, 100), fill="black")
    draw.line((20, 20, 20, 100), fill="black")
    top = max(values.values())
    for i, (name, value) in enumerate(values.items()):
        x = 32 + i * 40
        draw.rectangle((x, 100 - value / top * 70, x + 24, 100), fill=BLUE)
        draw.text((x + 6, 104), name, fill="black", font=font())
        draw.text((x + 8, 100 - value / top * 70 - 12), str(value), fill="black", font=font())
    return img


def table_image(rows: list[tuple[str, str]]) -> Image.Image:
    img = Image.new("RGB", (160, 20 * len(rows) + 8), "white")
    draw = ImageDraw.Draw(img)
    for i, (a, b) in enumerate(rows):
        y = 4 + 20 * i
        draw.rectangle((4, y, 80, y + 20), outline="black", fill=(225, 225, 225) if i == 0 else "white")
        draw.rectangle((80, y, 156, y + 20), outline="black", fill=(225, 225, 225) if i == 0 else "white")
        draw.text((10, y + 5), a, fill="black", font=font())
        draw.text((86, y + 5), b, fill="black", font=font())
    return img


def diagram_image() -> Image.Image:
    img = Image.new("RGB", (160, 80), "white")
    draw = ImageDraw.Draw(img)
    for x, label in ((8, "Start"), (104, "End")):
        draw.rectangle((x, 25, x + 48, 55), outline="black", fill=(220, 235, 250))
        draw.text((x + 8, 34), label, fill="black", font=font())
    draw.line((56, 40, 102, 40), fill="black", width=2)
    draw.polygon([(102, 40), (94, 35), (94, 45)], fill="black")
    return img


def document_image() -> Image.Image:
    img = Image.new("RGB", (120, 90), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(("INVOICE #42", "Pens      $6.50", "Paper    $12.00", "Total    $18.50")):
        draw.text((8, 8 + 20 * i), line, fill="black", font=font())
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------------------------------


def write_parquet(rows: list[dict], features, path: Path) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))


def build(out: Path = OUT) -> list[Path]:
    """Write every sample file under out; returns the files written."""
    from datasets import Features, List, Sequence, Value
    from datasets import Image as ImageFeature

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    sha = {}
    for name in SCENES:
        img = scene_image(name)
        path = images / name
        img.save(path, **({"format": "JPEG", "quality": 85} if name.endswith(".jpg") else {"format": "PNG",
                                                                                              "optimize": True}))
        sha[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    url = {name: f"images/{name}" for name in SCENES}
    written = []

    def write(rows, features, rel):
        write_parquet(rows, features, out / rel)
        written.append(out / rel)

    xy = {"x": Value("float64"), "y": Value("float64")}

    # pixmo-cap: image_url, caption, transcripts (no sha256 column). The last row's image is gone (a dead link).
    write([
        {"image_url": url["scene_0.png"],
         "caption": "Three red circles sit on a pale grey background, two near the left edge and one near the bottom, "
                    "and a blue square is on the right.",
         "transcripts": ["So I see three red dots, um, circles, on the left and one blue square over on the right.",
                         "Okay, a plain light background with red circles, three of them, and a single blue square."]},
        {"image_url": url["scene_1.png"],
         "caption": "Two green triangles point upwards, one at the lower left and one at the top, with a yellow "
                    "circle in the bottom right corner.",
         "transcripts": ["There are two green triangles and a yellow circle at the bottom right."]},
        {"image_url": url["scene_2.jpg"],
         "caption": "Four blue squares of the same size are spread over a light background.",
         "transcripts": ["Four blue squares.", "I can see four squares, all blue, spread out.",
                         "It's four blue boxes on a grey background."]},
        {"image_url": "images/gone_0.jpg", "caption": "A photograph that is no longer online.",
         "transcripts": ["This link is dead."]},
    ], Features({"image_url": Value("string"), "caption": Value("string"), "transcripts": Sequence(Value("string"))}),
        "pixmo-cap/train-00000-of-00001.parquet")

    # pixmo-points: points in 0-100 although the card says pixels (every official loader uses point_scale=100).
    points_features = Features({"image_url": Value("string"), "image_sha256": Value("string"), "points": List(xy),
                                "count": Value("int64"), "label": Value("string"),
                                "collection_method": Value("string")})

    def point_row(name, label, pts, method):
        return {"image_url": url[name], "image_sha256": sha[name], "points": pts, "count": len(pts), "label": label,
                "collection_method": method}

    write([
        point_row("scene_0.png", "red circle", centres("scene_0.png", "circle"), "pointing"),
        point_row("scene_0.png", "blue square", centres("scene_0.png", "square"), "pointing"),
        point_row("scene_1.png", "green triangles", centres("scene_1.png", "triangle"), "counting"),
        point_row("scene_0.png", "red circles", centres("scene_0.png", "circle"), "counting"),
        point_row("scene_1.png", "elephant", [], "pointing"),
    ], points_features, "pixmo-points/train-00000-of-00001.parquet")

    # pixmo-points-eval: one boolean mask per point.
    eval_masks = {name: masks(name) for name in ("eval_0.png", "eval_1.png")}
    write([
        {"image_url": url["eval_0.png"], "image_sha256": sha["eval_0.png"], "label": "orange circle",
         "points": centres("eval_0.png"), "masks": eval_masks["eval_0.png"]},
        {"image_url": url["eval_1.png"], "image_sha256": sha["eval_1.png"], "label": "purple square",
         "points": centres("eval_1.png"), "masks": eval_masks["eval_1.png"]},
    ], Features({"image_url": Value("string"), "image_sha256": Value("string"), "label": Value("string"),
                 "points": List(xy), "masks": Sequence(Sequence(Sequence(Value("bool"))))}),
        "pixmo-points-eval/test-00000-of-00001.parquet")

    # pixmo-count: points in PIXELS, as a Sequence of {x, y} (read back as {"x": [...], "y": [...]}); none in val/test.
    count_features = Features({"image_url": Value("string"), "image_sha256": Value("string"), "count": Value("int32"),
                               "points": Sequence({"x": Value("float32"), "y": Value("float32")}),
                               "label": Value("string")})

    def count_row(name, label, kind, with_points=True):
        pts = centres(name, kind, percent=False)
        xs, ys = ([p["x"] for p in pts], [p["y"] for p in pts]) if with_points else ([], [])
        return {"image_url": url[name], "image_sha256": sha[name], "count": len(pts), "points": {"x": xs, "y": ys},
                "label": label}

    write([count_row("scene_2.jpg", "squares", "square"), count_row("scene_1.png", "triangles", "triangle")],
          count_features, "pixmo-count/train-00000-of-00001.parquet")
    write([count_row("scene_0.png", "circles", "circle", with_points=False)], count_features,
          "pixmo-count/validation-00000-of-00001.parquet")

    # pixmo-docs: the image is in the row (an Image feature), questions as a Sequence of {question, answer}.
    docs_features = Features({"image": ImageFeature(), "image_id": Value("string"),
                              "questions": Sequence({"question": Value("string"), "answer": Value("string")})})

    def doc_row(img, image_id, qas):
        return {"image": {"bytes": png_bytes(img), "path": None}, "image_id": image_id,
                "questions": {"question": [q for q, _ in qas], "answer": [a for _, a in qas]}}

    docs = {
        "charts": [doc_row(bar_chart({"A": 3, "B": 5, "C": 2}, "Sales by region"), "chart_0000",
                           [("Which region has the highest sales?", "B"), ("What are the sales of region C?", "2"),
                            ("How many regions are shown?", "3")]),
                   doc_row(bar_chart({"2019": 4, "2020": 6}, "Members"), "chart_0001",
                           [("How many members were there in 2020?", "6"),
                            ("By how much did membership grow from 2019 to 2020?", "2")])],
        "tables": [doc_row(table_image([("Fruit", "Price"), ("Apple", "1.20"), ("Pear", "0.90")]), "table_0000",
                           [("What is the price of a pear?", "0.90"), ("Which fruit costs 1.20?", "Apple")])],
        "diagrams": [doc_row(diagram_image(), "diagram_0000", [("What step comes after Start?", "End")])],
        "other": [doc_row(document_image(), "other_0000", [("What is the invoice total?", "$18.50"),
                                                           ("What is the invoice number?", "42")])],
    }
    for config, rows in docs.items():
        write(rows, docs_features, f"pixmo-docs/{config}/train-00000-of-00001.parquet")

    # pixmo-clocks: metadata only on the Hub; our rendered faces go to pixmo-clocks/images/.
    clock_dir = out / "pixmo-clocks" / "images"
    clock_dir.mkdir(parents=True, exist_ok=True)
    clock_rows = []
    for eid, wid, wname, wtime, fmt, secs, hv, mv, sv, text in CLOCKS:
        hh, mm, ss = (int(v) for v in wtime.split("T")[1].split(":"))
        clock_image(hh, mm, ss if secs else None).save(clock_dir / clock_file_name(eid), format="PNG", optimize=True)
        clock_rows.append({"example_id": eid, "watchface_id": wid, "watchface_name": wname, "watch_time": wtime,
                           "time_format": fmt, "shows_seconds": secs, "hour_visible": hv, "minute_visible": mv,
                           "second_visible": sv, "text": text})
    write(clock_rows, Features({"example_id": Value("string"), "watchface_id": Value("string"),
                                "watchface_name": Value("string"), "watch_time": Value("string"),
                                "time_format": Value("string"), "shows_seconds": Value("bool"),
                                "hour_visible": Value("int32"), "minute_visible": Value("int32"),
                                "second_visible": Value("int32"), "text": Value("string")}),
          "pixmo-clocks/train-00000-of-00001.parquet")

    # pixmo-ask-model-anything: one Q/A per row, image URLs repeat.
    write([
        {"image_url": url["scene_0.png"], "image_sha256": sha["scene_0.png"],
         "question": "What colour is the square?", "answer": "The square on the right side of the image is blue."},
        {"image_url": url["scene_0.png"], "image_sha256": sha["scene_0.png"],
         "question": "Describe the arrangement of the circles.",
         "answer": "There are three red circles: one near the top left, one a little lower on the left, and one "
                   "near the bottom."},
        {"image_url": url["scene_1.png"], "image_sha256": sha["scene_1.png"],
         "question": "How many triangles are in the picture?", "answer": "There are two green triangles."},
        {"image_url": url["scene_2.jpg"], "image_sha256": sha["scene_2.jpg"],
         "question": "Are all the squares the same colour?", "answer": "Yes, all four squares are blue."},
    ], Features({"image_url": Value("string"), "image_sha256": Value("string"), "question": Value("string"),
                 "answer": Value("string")}), "pixmo-ask-model-anything/train-00000-of-00001.parquet")

    # pixmo-cap-qa: question holds the conversation so far ("[USER] ... [ASSISTANT] ... [USER] ..."), answer the last
    # reply, messages the whole conversation (the newest version of the card).
    write([
        {"image_url": url["scene_0.png"],
         "question": "[USER] What colour are the circles? [ASSISTANT] They are red. [USER] And the square?",
         "answer": "The square is blue.",
         "messages": ["What colour are the circles?", "They are red.", "And the square?", "The square is blue."]},
        {"image_url": url["scene_1.png"], "question": "[USER] What is in the bottom right corner?",
         "answer": "A yellow circle.", "messages": ["What is in the bottom right corner?", "A yellow circle."]},
        {"image_url": url["scene_2.jpg"], "question": "[USER] How many squares can be seen?",
         "answer": "Four squares can be seen.", "messages": ["How many squares can be seen?",
                                                             "Four squares can be seen."]},
    ], Features({"image_url": Value("string"), "question": Value("string"), "answer": Value("string"),
                 "messages": Sequence(Value("string"))}), "pixmo-cap-qa/train-00000-of-00001.parquet")

    # pixmo-point-explanations: parsed_response marks each point with <|POINT|>; points per mark in 0-100.
    write([
        {"image_url": url["scene_0.png"], "image_sha256": sha["scene_0.png"],
         "question": "Which shapes are red and where are they?",
         "response": "The red shapes are the three circles [circles] on the left; the square [square] is blue.",
         "parsed_response": "The red shapes are the <|POINT|> on the left; the <|POINT|> is blue.",
         "alt_text": ["red circles", "blue square"], "inline_text": ["three circles", "square"],
         "points": [centres("scene_0.png", "circle"), centres("scene_0.png", "square")]},
        {"image_url": url["scene_1.png"], "image_sha256": sha["scene_1.png"],
         "question": "Is there anything yellow?", "response": "Yes.", "parsed_response": None,
         "alt_text": [], "inline_text": [], "points": []},
    ], Features({"image_url": Value("string"), "image_sha256": Value("string"), "question": Value("string"),
                 "response": Value("string"), "parsed_response": Value("string"),
                 "alt_text": Sequence(Value("string")), "inline_text": Sequence(Value("string")),
                 "points": List(List(xy))}), "pixmo-point-explanations/train-00000-of-00001.parquet")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: data_samples/pixmo)")
    args = parser.parse_args()
    import datasets

    datasets.disable_progress_bars()
    files = build(args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(files)} data files under {args.out} ({total / 1024:.0f} KB with images and README)")


if __name__ == "__main__":
    main()

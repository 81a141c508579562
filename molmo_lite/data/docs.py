"""Charts and tables with questions, PixMo-Docs style, made offline and deterministic from a seed (chapter 07).

PixMo-Docs (allenai/pixmo-docs, ~255k images in four configs: charts, tables, diagrams, other) had a language model
write the code of a document image (matplotlib, LaTeX, HTML, ...) with data it made up, rendered the code, then
asked questions about the data it knew; every image carries several QA pairs (``questions {question[], answer[]}``).
Molmo trains on them with the styles ``pixmo_docs_charts``, ``pixmo_docs_tables``, ... and packs all the questions
about one image into one sequence. We do the same with no language model: random integer data about a small
vocabulary (fruit, pets, cities, months...), drawn with matplotlib, and questions whose answers are computed from
that data.

    Example(image=uint8 [160, 160, 3],
            messages=[[Message("What is the value of Pears?", "42", "pixmo_docs_charts")],
                      [Message("Which category has the highest value?", "Plums", "pixmo_docs_charts")], ...],
            task="charts", meta={"kind": "bar", "data": {"Apples": 17, "Pears": 42, "Plums": 88}, ...})

Charts: vertical bars, horizontal bars, lines, pies; tables: 3-5 rows of 2-4 integer columns. Every number is
written on the image (bar labels, pie labels, table cells), so each question can be answered by reading it. Values in
a chart, and in a table column, are distinct, so "highest" and "lowest" have one answer.

Size. DEFAULT_SIZE = 160 px: text is 7-9 px tall, small but legible (at 112 px digits are 5 px and the category
names run into each other; a 56 px chart is a blur). The picture is laid out on a fixed 2.24-inch figure and only
the dpi follows ``size``, so every size shows the same layout.

Determinism and speed. Rendering uses the Agg canvas directly (no pyplot, no display, no global backend change)
under matplotlib's default style plus our own settings (DejaVu Sans, shipped with matplotlib), so the same
(seed, split) gives the same bytes whatever the user's matplotlibrc says. Matplotlib needs tens of milliseconds a
picture, so ``cache_dir`` keeps every rendered image as a PNG named by a hash of what it shows; later epochs only
read them back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..prompts import Message
from .examples import Example, split_seed

DEFAULT_SIZE = 160
RENDER_VERSION = 1  # bump when the drawing changes: the cache then renders again
FIGURE_INCHES = 2.24  # the layout's size; dpi = size / FIGURE_INCHES
CHART_KINDS = ("bar", "hbar", "line", "pie")
CHART_STYLE, TABLE_STYLE = "pixmo_docs_charts", "pixmo_docs_tables"

# Everything the pictures depend on, on top of matplotlib's default style.
RC = {"font.family": "DejaVu Sans", "font.size": 7.5, "text.color": "#222222", "axes.edgecolor": "#444444",
      "axes.labelcolor": "#222222", "xtick.color": "#333333", "ytick.color": "#333333", "xtick.labelsize": 7.0,
      "ytick.labelsize": 7.0, "text.antialiased": True, "text.hinting": "no_hinting",
      "axes.unicode_minus": False, "figure.facecolor": "white", "axes.facecolor": "white"}
LABEL_POINTS, TITLE_POINTS = 7.0, 9.0  # values written on the chart, titles
INK = "#222222"  # labels and values: never one of PALETTE, so bars can be told from text by colour
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#17becf", "#e377c2", "#bcbd22")
HEADER_COLOURS = ("#dbe8f5", "#fde2c8", "#d9f0d3", "#eadcf0", "#f7f3c6")

# (title, categories, ordered): ordered vocabularies (months, days, years) are the x axis of line charts.
CHART_THEMES = (
    ("Fruit sold", ("Apples", "Pears", "Plums", "Grapes", "Lemons", "Limes", "Kiwis", "Figs"), False),
    ("Pets in town", ("Cats", "Dogs", "Fish", "Birds", "Mice", "Frogs", "Snakes"), False),
    ("Votes by colour", ("Red", "Blue", "Green", "Yellow", "Purple", "Orange", "Pink"), False),
    ("Visitors by city", ("Oslo", "Lima", "Cairo", "Quito", "Dakar", "Hanoi", "Perth", "Turin"), False),
    ("Points by team", ("Lions", "Tigers", "Bears", "Wolves", "Eagles", "Sharks", "Hawks"), False),
    ("Rain per month", ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), True),
    ("Visitors per day", ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), True),
    ("Sales per year", tuple(str(y) for y in range(2016, 2026)), True),
)
# (title, row header, its plural, rows, columns)
TABLE_THEMES = (
    ("League table", "Team", "teams", ("Lions", "Tigers", "Bears", "Wolves", "Eagles", "Sharks", "Hawks"),
     ("Wins", "Losses", "Draws", "Goals")),
    ("Fruit stall", "Fruit", "fruits", ("Apples", "Pears", "Plums", "Grapes", "Lemons", "Limes", "Kiwis"),
     ("Price", "Stock", "Sold", "Crates")),
    ("Class marks", "Student", "students", ("Ana", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana"),
     ("Math", "Art", "Music", "Sport")),
    ("City facts", "City", "cities", ("Oslo", "Lima", "Cairo", "Quito", "Dakar", "Hanoi", "Perth"),
     ("Parks", "Schools", "Museums", "Bridges")),
)


@dataclass(frozen=True)
class Chart:
    """What a chart shows: kind (one of CHART_KINDS), title, data {category: int} in drawing order, and one colour
    per category (the same for all bars or points of a bar or line chart)."""

    kind: str
    title: str
    data: dict[str, int]
    colours: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """What a table shows: title, the header of the row names, their plural, the numeric columns and the rows
    {row name: {column: int}} in drawing order."""

    title: str
    row_header: str
    row_plural: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, int]]
    header_colour: str


# --------------------------------------------------------------------------------------------------------------------
# 1. Random data.
# --------------------------------------------------------------------------------------------------------------------


def _distinct(rng: np.random.Generator, low: int, high: int, n: int) -> list[int]:
    """n distinct integers in [low, high]."""
    return [int(v) + low for v in rng.choice(high - low + 1, size=n, replace=False)]


def random_chart(rng: np.random.Generator, kinds: Sequence[str] = CHART_KINDS) -> Chart:
    """A chart of a random kind: 3-6 categories (3-5 for a pie) with distinct values 5-99 (a pie: 10-60); a line
    chart takes consecutive entries of an ordered vocabulary (months, days, years)."""
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind not in CHART_KINDS:
        raise ValueError(f"chart kinds must be among {CHART_KINDS}, got {kind!r}")
    themes = [t for t in CHART_THEMES if t[2]] if kind == "line" else list(CHART_THEMES)
    title, vocabulary, ordered = themes[int(rng.integers(len(themes)))]
    n = int(rng.integers(3, 6 if kind == "pie" else 7))
    if ordered:
        start = int(rng.integers(len(vocabulary) - n + 1))
        names = list(vocabulary[start:start + n])
    else:
        names = [vocabulary[int(i)] for i in rng.choice(len(vocabulary), size=n, replace=False)]
    values = _distinct(rng, 10, 60, n) if kind == "pie" else _distinct(rng, 5, 99, n)
    if kind == "pie":
        colours = tuple(PALETTE[int(i)] for i in rng.choice(len(PALETTE), size=n, replace=False))
    else:
        colours = (PALETTE[int(rng.integers(len(PALETTE)))],) * n
    return Chart(kind, title, dict(zip(names, values)), colours)


def random_table(rng: np.random.Generator) -> Table:
    """A table of 3-5 rows and 2-4 integer columns, values 0-99, distinct within each column."""
    title, header, plural, names, columns = TABLE_THEMES[int(rng.integers(len(TABLE_THEMES)))]
    n_rows, n_cols = int(rng.integers(3, 6)), int(rng.integers(2, 5))
    rows = [names[int(i)] for i in rng.choice(len(names), size=n_rows, replace=False)]
    cols = tuple(columns[:n_cols])
    values = {col: _distinct(rng, 0, 99, n_rows) for col in cols}
    colour = HEADER_COLOURS[int(rng.integers(len(HEADER_COLOURS)))]
    return Table(title, header, plural, cols, {r: {c: values[c][i] for c in cols} for i, r in enumerate(rows)},
                 colour)


# --------------------------------------------------------------------------------------------------------------------
# 2. Questions, answered from the data.
# --------------------------------------------------------------------------------------------------------------------

BIGGEST = {"bar": "Which bar is the tallest?", "hbar": "Which bar is the longest?",
           "pie": "Which slice is the largest?", "line": "Where does the line reach its highest value?"}
HOW_MANY = {"bar": "How many bars are there?", "hbar": "How many bars are there?", "pie": "How many slices are there?",
            "line": "How many points does the line have?"}


def chart_questions(chart: Chart, rng: np.random.Generator) -> list[tuple[str, str]]:
    """One (question, answer) per kind of question -- value, highest, lowest, difference, count, total, sum of two
    -- with random categories; answers are integers or category names, as written on the chart."""
    data = chart.data
    names = list(data)
    a, b = (names[int(i)] for i in rng.permutation(len(names))[:2])
    top, bottom = max(names, key=data.get), min(names, key=data.get)
    return [
        ((f"What is the value of {a}?", f"How much is {a}?")[int(rng.integers(2))], str(data[a])),
        (("Which category has the highest value?", BIGGEST[chart.kind])[int(rng.integers(2))], top),
        ("Which category has the lowest value?", bottom),
        (f"What is the difference between {a} and {b}?", str(abs(data[a] - data[b]))),
        (("How many categories are there?", HOW_MANY[chart.kind])[int(rng.integers(2))], str(len(names))),
        ("What is the sum of all values?", str(sum(data.values()))),
        (f"What is the total of {a} and {b}?", str(data[a] + data[b])),
    ]


def table_questions(table: Table, rng: np.random.Generator) -> list[tuple[str, str]]:
    """One (question, answer) per kind of question -- cell lookup, highest and lowest of a column, column total,
    number of rows, difference of two cells -- with random rows and columns."""
    names = list(table.rows)
    a, b = (names[int(i)] for i in rng.permutation(len(names))[:2])
    col = table.columns[int(rng.integers(len(table.columns)))]
    column = {r: table.rows[r][col] for r in names}
    lookup = (f"What does the {col} column say for {a}?", f"What is the value of {col} for {a}?")[int(rng.integers(2))]
    return [
        (lookup, str(column[a])),
        (f"Which {table.row_header.lower()} has the highest {col}?", max(names, key=column.get)),
        (f"Which {table.row_header.lower()} has the lowest {col}?", min(names, key=column.get)),
        ((f"What is the total {col}?", f"What is the sum of the {col} column?")[int(rng.integers(2))],
         str(sum(column.values()))),
        ((f"How many {table.row_plural} are listed?", "How many rows does the table have?")[int(rng.integers(2))],
         str(len(names))),
        (f"What is the difference in {col} between {a} and {b}?", str(abs(column[a] - column[b]))),
    ]


def _pick_questions(qa: list[tuple[str, str]], rng: np.random.Generator, k: int, tag: str) -> list[list[Message]]:
    """k of the questions (distinct kinds) in random order, each its own annotation with style ``tag``."""
    return [[Message(*qa[int(i)], tag)] for i in rng.permutation(len(qa))[:k]]


# --------------------------------------------------------------------------------------------------------------------
# 3. Drawing with matplotlib.
# --------------------------------------------------------------------------------------------------------------------


def _render(draw: Callable[[Figure], None], size: int) -> np.ndarray:
    """Run ``draw`` on a fresh FIGURE_INCHES-square figure under the fixed style -> uint8 [size, size, 3]."""
    with style.context(["default", RC]):
        fig = Figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), dpi=size / FIGURE_INCHES)
        canvas = FigureCanvasAgg(fig)
        draw(fig)
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if image.shape != (size, size, 3):
        raise RuntimeError(f"matplotlib drew {image.shape}, expected {(size, size, 3)}")
    return image


def _bars(ax, chart: Chart) -> None:
    """Vertical or horizontal bars from 0, each labelled with its value."""
    names, values = list(chart.data), list(chart.data.values())
    top = max(values)
    if chart.kind == "bar":
        bars = ax.bar(names, values, color=chart.colours, width=0.62)
        ax.set_ylim(0, top * 1.18)
        ax.set_yticks([])
    else:
        bars = ax.barh(names[::-1], values[::-1], color=chart.colours[::-1], height=0.62)  # first category on top
        ax.set_xlim(0, top * 1.25)
        ax.set_xticks([])
    ax.bar_label(bars, padding=1.5, fontsize=LABEL_POINTS, color=INK)
    if chart.kind == "bar" and len(names) > 4:  # long names side by side would run into each other
        ax.tick_params(axis="x", labelrotation=35)
        for label in ax.get_xticklabels():
            label.set(ha="right", rotation_mode="anchor")
    for side in ("top", "right", "left" if chart.kind == "bar" else "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)


def _line(ax, chart: Chart) -> None:
    """A line through the values with markers, each point labelled with its value."""
    names, values = list(chart.data), list(chart.data.values())
    ax.plot(names, values, color=chart.colours[0], marker="o", markersize=3, linewidth=1.3)
    for x, v in enumerate(values):
        ax.annotate(str(v), (x, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=LABEL_POINTS,
                    color=INK)
    ax.set_ylim(0, max(values) * 1.22)
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)


def _pie(ax, chart: Chart) -> None:
    """Slices clockwise from the top in data order; names outside, values inside."""
    values = list(chart.data.values())
    total = sum(values)
    ax.pie(values, labels=list(chart.data), colors=chart.colours, startangle=90, counterclock=False,
           autopct=lambda p: f"{round(p * total / 100)}", pctdistance=0.62, labeldistance=1.1,
           textprops={"fontsize": LABEL_POINTS, "color": INK}, wedgeprops={"linewidth": 0.8, "edgecolor": "white"})
    ax.set_aspect("equal")


def render_chart(chart: Chart, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Draw a chart with its title -> uint8 [size, size, 3]."""
    def draw(fig: Figure) -> None:
        if chart.kind == "pie":
            ax = fig.add_axes((0.16, 0.08, 0.68, 0.7))
            _pie(ax, chart)
        else:
            rotated = chart.kind == "bar" and len(chart.data) > 4
            ax = fig.add_axes((0.22, 0.06, 0.72, 0.78) if chart.kind == "hbar" else
                              (0.08, 0.2 if rotated else 0.12, 0.88, 0.64 if rotated else 0.72))
            (_line if chart.kind == "line" else _bars)(ax, chart)
        fig.suptitle(chart.title, y=0.97, fontsize=TITLE_POINTS, fontweight="bold")
    return _render(draw, size)


def render_table(table: Table, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Draw a table with its title: a header row (the row header, then the columns), then one row per entry
    -> uint8 [size, size, 3]."""
    def draw(fig: Figure) -> None:
        ax = fig.add_axes((0.04, 0.06, 0.92, 0.76))
        ax.axis("off")
        cells = [[name, *(str(row[c]) for c in table.columns)] for name, row in table.rows.items()]
        chars = [max(len(n) for n in [table.row_header, *table.rows]), *(max(len(c), 4) for c in table.columns)]
        widths = [c / sum(chars) for c in chars]  # room in proportion to the longest text of each column
        grid = ax.table(cellText=cells, colLabels=[table.row_header, *table.columns], colWidths=widths,
                        cellLoc="center", bbox=(0, 0, 1, 1))
        grid.auto_set_font_size(False)
        grid.set_fontsize(LABEL_POINTS)
        for (r, _), cell in grid.get_celld().items():
            cell.set_edgecolor("#888888")
            cell.set_linewidth(0.5)
            if r == 0:
                cell.set_facecolor(table.header_colour)
        fig.suptitle(table.title, y=0.97, fontsize=TITLE_POINTS, fontweight="bold")
    return _render(draw, size)


# --------------------------------------------------------------------------------------------------------------------
# 4. The cache and the examples.
# --------------------------------------------------------------------------------------------------------------------


def cache_path(cache_dir: str | Path, kind: str, seed: int, split: str, index: int, size: int,
               spec: Chart | Table) -> Path:
    """Where a rendered image is kept: '{kind}-{hash}.png', the hash of (kind, seed, split, index, size,
    RENDER_VERSION, matplotlib's version, everything the picture shows). The picture's content is in the key so
    that another option (fewer chart kinds, say) can never bring back a stale image."""
    key = json.dumps([kind, seed, split, index, size, RENDER_VERSION, matplotlib.__version__, asdict(spec)])
    return Path(cache_dir) / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.png"


def _cached(path: Path | None, render: Callable[..., np.ndarray], *args) -> np.ndarray:
    """The image at ``path`` if it is there and readable, else ``render(*args)`` written there (PNG, lossless, through a
    temporary file so that a reader never sees half a file)."""
    if path is not None and path.exists():
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError:
            pass  # a damaged file: draw it again
    image = render(*args)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
    return image


def chart_examples(n: int, seed: int = 0, split: str = "train", size: int = DEFAULT_SIZE,
                   kinds: Sequence[str] = CHART_KINDS, questions: int = 4,
                   cache_dir: str | Path | None = None) -> list[Example]:
    """n charts of the given kinds, each with ``questions`` QA annotations of different kinds (style
    pixmo_docs_charts). Images uint8 [size, size, 3]; meta: kind, data {category: value}, title, colours.
    cache_dir: keep rendered images there and reuse them (same bytes as rendering again)."""
    rng = np.random.default_rng(split_seed(seed, split))
    examples = []
    for index in range(n):
        chart = random_chart(rng, kinds)
        messages = _pick_questions(chart_questions(chart, rng), rng, questions, CHART_STYLE)
        path = None if cache_dir is None else cache_path(cache_dir, "chart", seed, split, index, size, chart)
        image = _cached(path, render_chart, chart, size)
        examples.append(Example(image, messages, "charts", {"kind": chart.kind, "data": dict(chart.data),
                                                            "title": chart.title, "colours": list(chart.colours)}))
    return examples


def table_examples(n: int, seed: int = 0, split: str = "train", size: int = DEFAULT_SIZE, questions: int = 4,
                   cache_dir: str | Path | None = None) -> list[Example]:
    """n tables, each with ``questions`` QA annotations of different kinds (style pixmo_docs_tables). Images uint8
    [size, size, 3]; meta: kind "table", data {row: {column: value}}, columns, row_header, title.
    cache_dir: keep rendered images there and reuse them."""
    rng = np.random.default_rng(split_seed(seed, split))
    examples = []
    for index in range(n):
        table = random_table(rng)
        messages = _pick_questions(table_questions(table, rng), rng, questions, TABLE_STYLE)
        path = None if cache_dir is None else cache_path(cache_dir, "table", seed, split, index, size, table)
        image = _cached(path, render_table, table, size)
        examples.append(Example(image, messages, "tables", {
            "kind": "table", "data": {r: dict(v) for r, v in table.rows.items()}, "columns": list(table.columns),
            "row_header": table.row_header, "title": table.title}))
    return examples

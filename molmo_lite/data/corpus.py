"""The course's text corpus: every kind of line the tiny Molmo reads and writes (the tiny BPE of chapter 05 learns it).

Lines are built from the synthetic scenes of ``synthetic.py`` in Molmo's text formats (allenai/molmo,
olmo/data/data_formatter.py):

    caption   " long_caption 5: a red circle at the top left and a blue square at the centre"
    pointing  " User: Point to the red circle Assistant: <point x="16.2" y="14.9" alt="red circle">red circle</point>"
    counting  " User: point_count: How many circles are there? Assistant: Counting the <points x1="..." ...
               alt="circles">circles</points> shows a total of 2."   /   "... Assistant: There are none."
    qa        " User: What colour is the square at the top left? Assistant: blue"
    clock     " User: clocks: What time is shown? Assistant: 3:45"
    scene     " User: Point to the red circles. Scene: blue square 12.0 30.1; red circle 58.2 67.6 Assistant:
               <point x="58.2" y="67.6" alt="red circles">red circles</point>"   (not in the default mix: below)

The scene kind writes chapter 07's pointing scenes as text, each object as "colour shape x y" in Molmo's 0-100 units,
in the order of the image tokens of an 8 x 8 grid (row by row), where the image tokens would be; its questions
(pointing, counting, the leftmost / rightmost / top / bottom one of a class, the total, what is nearest to a point)
are answered from the objects with ``pointing.py``'s formats. It teaches in text what the oracle harness asks of
image tokens, as a pre-trained LLM brings such skills to Molmo (Qwen2 reads lists, compares and copies numbers
before it ever sees an image).

Image tokens never appear here: the tokenizer adds them as whole tokens, so BPE must not spend merges on them.
Deterministic: the same (n, seed) always gives the same lines.
"""

from __future__ import annotations

import numpy as np

from ..pointing import count_to_text, points_to_text
from ..prompts import ASSISTANT, Message, format_messages
from .synthetic import COLOURS, SHAPES, SceneObject, caption_scene, pointing_example, random_scene

KINDS = ("caption", "pointing", "counting", "qa", "clock")  # chapter 04's default mix
KIND_WEIGHTS = (0.3, 0.25, 0.2, 0.15, 0.1)
EXTRA_KINDS = {"scene": 0.5}  # kind -> weight, opt-in (``kinds=KINDS + ("scene",)``), so the default mix is unchanged
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Like Molmo's data formatter, each task draws its question from several templates ({label}: what to point at).
CAPTION_PROMPTS = ("Describe this image.", "Describe this image in detail.", "What do you see in this image?",
                   "Write a short caption for this image.", "Tell me about the shapes in this picture.")
POINT_PROMPTS = ("Point to the {label}", "Point to all the {label}", "Point to any {label} in the image",
                 "Locate the {label}.", "Show me the {label}.",
                 "Point to the {label}\nPlease say 'There are none.' if it is not in the image.")
COUNT_PROMPTS = ("How many {label} are there?", "Count the {label} in the image.", "How many {label} are in the image?",
                 "What is the number of {label}?", "Count how many {label} you can see.")
CLOCK_PROMPTS = ("What time is shown?", "What time does the clock show?", "What time is it?",
                 "Read the time on the clock.")


def course_corpus(n: int = 20000, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """n deterministic lines of course text (captions, prompts, pointing and counting answers, QA, clock times).
    kinds: the KINDS to write, at their KIND_WEIGHTS renormalised (all of them: the chapter 04 corpus; without
    "pointing" and "counting": an LM that has never seen the point format, as Qwen2 had not before Molmo), and any
    of EXTRA_KINDS ("scene": scenes written as text, ``scene_line``)."""
    every = dict(zip(KINDS, KIND_WEIGHTS)) | EXTRA_KINDS
    unknown = sorted(set(kinds) - set(every))
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {tuple(every)}, got {kinds}")
    rng = np.random.default_rng(seed)
    makers = {"caption": caption_line, "pointing": pointing_line, "counting": counting_line, "qa": qa_line,
              "clock": clock_line, "scene": scene_line}
    names = [k for k in every if k in kinds]
    weights = np.array([every[k] for k in names])
    picks = rng.choice(len(names), size=n, p=weights / weights.sum())
    return [makers[names[k]](rng) for k in picks]


# --------------------------------------------------------------------------------------------------------------------
# Formats: pointing and counting answers come from pointing.py; the chat turn (prompts.py will own the canonical
# version) follows Molmo's.
# --------------------------------------------------------------------------------------------------------------------


def chat(question: str, answer: str, style: str | None = None) -> str:
    """One SFT turn as the model reads it: ' User: {style}: {question} Assistant: {answer}'."""
    prefix = f"{style}: " if style else ""
    return f" User: {prefix}{question} Assistant: {answer}"


def _plural(shape: str) -> str:
    return shape + "s"


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _style(rng: np.random.Generator, style: str, p: float = 0.1) -> str | None:
    """Demo styles (pointing, point_count, user_qa, long_caption) carry their prefix only some of the time."""
    return style if rng.random() < p else None


# --------------------------------------------------------------------------------------------------------------------
# One line of each kind.
# --------------------------------------------------------------------------------------------------------------------


def caption_line(rng: np.random.Generator) -> str:
    """Stage 1: ' long_caption {hint}: {caption}' with Molmo's noisy length hint (none 10% of the time); or, 1 in 4,
    the same caption asked for in a chat turn (SFT's demo captions)."""
    caption = caption_scene(random_scene(rng, max_objects=4))
    if rng.random() < 0.25:
        return chat(_pick(rng, CAPTION_PROMPTS), caption, style=_style(rng, "long_caption"))
    hint = "" if rng.random() < 0.1 else str(max(0, (len(caption) + int(rng.normal(0, 25))) // 15))
    return f" long_caption {hint}: {caption}"


def _target(rng: np.random.Generator, objects: list[SceneObject]) -> tuple[str, list[tuple[float, float]]]:
    """A label to point at (a colour+shape, a shape, or a colour) and the scene points it names (maybe none)."""
    how = rng.integers(3)
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    if rng.random() < 0.7:  # mostly ask about something that is there
        obj = objects[int(rng.integers(len(objects)))]
        colour, shape = obj.colour, obj.shape
    if how == 0:
        label, hits = f"{colour} {shape}", [o for o in objects if (o.colour, o.shape) == (colour, shape)]
    elif how == 1:
        label, hits = _plural(shape), [o for o in objects if o.shape == shape]
    else:
        label, hits = f"{colour} shapes", [o for o in objects if o.colour == colour]
    return label, [(o.x, o.y) for o in hits]


def pointing_line(rng: np.random.Generator) -> str:
    """'Point to the X' (or point_qa 'Where is the X?') answered with <point>/<points> or 'There are none.'"""
    label, points = _target(rng, random_scene(rng, max_objects=6))
    if rng.random() < 0.3:
        return chat(f"Where is the {label}?", points_to_text(points, label), style="point_qa")
    question = _pick(rng, POINT_PROMPTS).format(label=label)
    return chat(question, points_to_text(points, label), style=_style(rng, "pointing"))


def counting_line(rng: np.random.Generator) -> str:
    """'How many X are there?' answered by pointing then counting, or with a bare number ('No pointing: ')."""
    label, points = _target(rng, random_scene(rng, max_objects=6))
    plural = label if label.endswith("s") else _plural(label)
    if rng.random() < 0.2:
        return chat(f"No pointing: How many {plural} are there?", str(len(points)))
    question = _pick(rng, COUNT_PROMPTS).format(label=plural)
    return chat(question, count_to_text(points, plural), style=_style(rng, "point_count", 0.5))


def qa_line(rng: np.random.Generator) -> str:
    """Short-answer questions about a scene: colour, shape, position, presence, number of shapes."""
    objects = random_scene(rng, max_objects=4, min_objects=2)
    obj, other = (objects[int(i)] for i in rng.permutation(len(objects))[:2])
    leftmost = min(objects, key=lambda o: o.x)
    questions = [
        (f"What colour is the {obj.shape} at the {obj.region}?", obj.colour),
        (f"What shape is at the {obj.region}?", obj.shape),
        (f"Where is the {obj.colour} {obj.shape}?", f"at the {obj.region}"),
        (f"Is there {_a(obj.colour)} {obj.colour} {obj.shape}?", "yes"),
        (f"Is the {obj.colour} {obj.shape} above the {other.colour} {other.shape}?",
         "yes" if obj.y < other.y else "no"),
        ("Which shape is furthest to the left?", f"the {leftmost.colour} {leftmost.shape}"),
        ("How many shapes are there?", str(len(objects)) if rng.random() < 0.7 else NUMBER_WORDS[len(objects)]),
    ]
    question, answer = questions[int(rng.integers(len(questions)))]
    return chat(question, answer, style=_style(rng, "user_qa"))


def clock_line(rng: np.random.Generator) -> str:
    """'What time is shown?' answered 'H:MM' (sometimes 'H:MM:SS'), as Molmo's clock data."""
    hour, minute, second = int(rng.integers(1, 13)), int(rng.integers(60)), int(rng.integers(60))
    time = f"{hour}:{minute:02d}" + (f":{second:02d}" if rng.random() < 0.2 else "")
    return chat(_pick(rng, CLOCK_PROMPTS), time, style="clocks")


# --------------------------------------------------------------------------------------------------------------------
# Scenes written as text (opt-in kind "scene"): chapter 07's pointing scenes, the objects where the image would be.
# --------------------------------------------------------------------------------------------------------------------

SCENE_GRID = 8  # the objects are listed in the order of an 8 x 8 grid's image tokens (row by row, then by x)
EXTREMES = {"leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)}  # (axis, sign)


def scene_text(objects: list[SceneObject], grid: int = SCENE_GRID) -> str:
    """' Scene: red circle 58.2 67.6; blue square 12.0 30.1' (an empty scene: ' Scene: nothing'), in the raster
    order of a grid x grid image (row of the centre, then x): the order the image tokens would give them."""
    cell = 100 / grid
    ordered = sorted(objects, key=lambda o: (min(grid - 1, int(o.y // cell)), o.x))
    listed = "; ".join(f"{o.colour} {o.shape} {o.x:.1f} {o.y:.1f}" for o in ordered)
    return " Scene: " + (listed or "nothing")


def scene_questions(objects: list[SceneObject], label: str, singular: str, points: list[tuple[float, float]],
                    rng: np.random.Generator) -> list[Message]:
    """The questions a text scene is asked (one is drawn per line), answered from the objects: point to the class,
    count it, the leftmost / rightmost / topmost / bottommost one, the total, the object nearest to a point."""
    side = str(rng.choice(list(EXTREMES)))
    axis, sign = EXTREMES[side]
    extreme = [min(points, key=lambda p: sign * p[axis])] if points else []
    x, y = (round(float(v), 1) for v in rng.uniform(0, 100, size=2))
    nearest = min(objects, key=lambda o: (o.x - x) ** 2 + (o.y - y) ** 2) if objects else None
    return [
        Message(f"Point to the {label}.", points_to_text(points, label), "pointing"),
        Message(f"How many {label} are there?", count_to_text(points, label), "point_count"),
        Message(f"Point to the {side} {singular}.", points_to_text(extreme, singular), "pointing"),
        Message("How many shapes are there?", str(len(objects)), None),
        Message(f"Which shape is nearest to {x:.1f} {y:.1f}?",
                f"the {nearest.colour} {nearest.shape}" if nearest else "There are none.", None),
    ]


SCENE_QUESTION_WEIGHTS = (0.35, 0.35, 0.1, 0.1, 0.1)


def scene_prompt(prompt: str, objects: list[SceneObject], question_first: bool = True) -> str:
    """A chat prompt (' User: {q} Assistant:') with the scene as text where the image tokens would be: after the
    question (the oracle harness's question-first layout) or before it (Molmo's)."""
    if not question_first:
        return scene_text(objects) + prompt
    user, assistant = prompt.rsplit(ASSISTANT, 1)
    return f"{user}{scene_text(objects)}{ASSISTANT}{assistant}"


def scene_line(rng: np.random.Generator, question_first: bool = True) -> str:
    """One scene of chapter 07's world (``pointing_example``: 0-10 of a class among 0-6 others) as text with one
    question: ' User: {q} Scene: ... Assistant: {a}' (the oracle harness's question-first layout), or with
    question_first False ' Scene: ... User: {q} Assistant: {a}' (Molmo's: the image before the question)."""
    example = pointing_example(rng, render=False)
    meta = example.meta
    questions = scene_questions(meta["objects"], meta["label"], meta["label"][:-1], meta["points"], rng)
    message = questions[int(rng.choice(len(questions), p=SCENE_QUESTION_WEIGHTS))]
    ((prompt, answer),) = format_messages([message], rng)
    return f"{scene_prompt(prompt, meta['objects'], question_first)} {answer}"

"""The real PixMo loaders on data_samples/pixmo (files in the real schemas) and a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from molmo_lite.data import pixmo
from molmo_lite.data.pixmo import DownloadReport, HubUnavailableError, ImageFetcher
from molmo_lite.pointing import count_to_text, match_points, parse_count, parse_points, points_to_text
from molmo_lite.prompts import Message

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples" / "pixmo"
SLOW_SECONDS = 1.0  # how long /slow/ waits before answering; the tests' timeout is far shorter
MAPPED = ("slow", "busy-once", "wait-once", "flaky", "stall", "no-length")  # /kind/rest serves the file at rest


# --------------------------------------------------------------------------------------------------------------------
# A local image server: serves data_samples/pixmo, plus paths that fail on purpose, and counts every request.
# --------------------------------------------------------------------------------------------------------------------


class _Server:
    def __init__(self, root: Path):
        self.root, self.counts, self.lock = root.resolve(), Counter(), threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # the name http.server calls
                try:
                    server.handle(self)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def requests(self, path: str) -> int:
        with self.lock:
            return self.counts["/" + path.lstrip("/")]

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urllib.parse.urlsplit(h.path).path
        with self.lock:
            self.counts[path] += 1
            n = self.counts[path]
        kind, _, rest = path.lstrip("/").partition("/")
        if kind == "dead":
            return self.status(h, 404)
        if kind == "busy" or (kind == "busy-once" and n == 1):  # a throttling host asking to come back in 28 hours
            return self.status(h, 429 if kind == "busy" else 503, {"Retry-After": "100000"})
        if kind == "wait-once" and n == 1:  # a host asking to come back in a second
            return self.status(h, 503, {"Retry-After": "1"})
        if kind == "garbled":  # a Retry-After that is neither seconds nor a date
            return self.status(h, 503, {"Retry-After": "soon"})
        if kind == "flaky" and n <= 2:  # two server errors without a Retry-After, then the image
            return self.status(h, 500)
        if kind == "trickle":  # 2 MiB at 64 KiB every 0.1 s: every read is quick, the whole file is not
            h.send_response(200)
            h.send_header("Content-Length", str(32 << 16))
            h.end_headers()
            for _ in range(32):
                h.wfile.write(bytes(1 << 16))
                time.sleep(0.1)
            return None
        if kind == "slow":
            time.sleep(SLOW_SECONDS)
        file = (self.root / (rest if kind in MAPPED else path.lstrip("/"))).resolve()
        if not file.is_file() or self.root not in file.parents:
            return self.status(h, 404)
        body = file.read_bytes()
        h.send_response(200)
        h.send_header("Set-Cookie", f"visit={n}; Path=/")  # as CDNs do; the fetcher's session keeps none
        if kind != "no-length":  # without a Content-Length the body ends when the connection closes (HTTP/1.0)
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if kind == "stall":  # half the body, then silence far past the timeout
            h.wfile.write(body[:len(body) // 2])
            h.wfile.flush()
            time.sleep(SLOW_SECONDS)
            body = body[len(body) // 2:]
        h.wfile.write(body)

    @staticmethod
    def status(h: http.server.BaseHTTPRequestHandler, code: int, headers: dict | None = None) -> None:
        h.send_response(code)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    srv = _Server(SAMPLES)
    yield srv
    srv.close()


@pytest.fixture
def fetcher(tmp_path):
    """Short timeouts and waits, a fresh cache per test."""
    return ImageFetcher(cache_dir=tmp_path / "cache", timeout=0.3, retries=1, backoff=0.01, max_wait=0.2, workers=3)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixel(image_path: Path, point: tuple[float, float]) -> tuple[int, int, int]:
    """The colour of the image at a 0-100 point."""
    with Image.open(image_path) as img:
        img = img.convert("RGB")
        return img.getpixel((int(point[0] / 100 * img.width), int(point[1] / 100 * img.height)))


def write_rows(rows: list[dict], path: Path) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


# --------------------------------------------------------------------------------------------------------------------
# The sample files are in the real schemas.
# --------------------------------------------------------------------------------------------------------------------

CARD_COLUMNS = {  # dataset -> (split, columns in the card's order)
    "pixmo-cap": ("train", ["image_url", "caption", "transcripts"]),
    "pixmo-points": ("train", ["image_url", "image_sha256", "points", "count", "label", "collection_method"]),
    "pixmo-points-eval": ("test", ["image_url", "image_sha256", "label", "points", "masks"]),
    "pixmo-count": ("train", ["image_url", "image_sha256", "count", "points", "label"]),
    "pixmo-clocks": ("train", ["example_id", "watchface_id", "watchface_name", "watch_time", "time_format",
                               "shows_seconds", "hour_visible", "minute_visible", "second_visible", "text"]),
    "pixmo-ask-model-anything": ("train", ["image_url", "image_sha256", "question", "answer"]),
    "pixmo-cap-qa": ("train", ["image_url", "question", "answer", "messages"]),
    "pixmo-point-explanations": ("train", ["image_url", "image_sha256", "question", "response", "parsed_response",
                                           "alt_text", "inline_text", "points"]),
}


def test_sample_files_have_the_columns_and_types_of_the_dataset_cards():
    for name, (split, columns) in CARD_COLUMNS.items():
        rows = pixmo.load_rows(SAMPLES / name, split)
        assert rows.column_names == columns, name
        assert 1 <= len(rows) <= 6, name
    count = pixmo.load_rows(SAMPLES / "pixmo-count", "train").features
    assert count["count"].dtype == "int32" and count["points"]["x"].feature.dtype == "float32"  # a Sequence of {x, y}
    for config in pixmo.DOCS_CONFIGS:
        docs = pixmo.load_rows(SAMPLES / "pixmo-docs", "train", config)
        assert docs.column_names == ["image", "image_id", "questions"]
        assert type(docs.features["image"]).__name__ == "Image"
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 300 * 1024


def _comparable(rows) -> list[dict]:
    """Rows as plain values: decoded images as pixel arrays, image_sha256 left out (it depends on the JPEG encoder)."""
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k != "image_sha256"}
        if "image" in row:
            row["image"] = np.asarray(row["image"].convert("RGB")).tolist()
        out.append(row)
    return out


def test_the_build_script_regenerates_the_samples(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_pixmo_samples", ROOT / "scripts" / "build_pixmo_samples.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.build(tmp_path)
    shipped = sorted(p.relative_to(SAMPLES) for p in SAMPLES.rglob("*") if p.is_file() and p.name != "README.md")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == shipped
    for rel in shipped:
        if rel.suffix == ".parquet":
            split = rel.name.split("-")[0]
            assert _comparable(pixmo.load_rows(tmp_path / rel, split)) == _comparable(
                pixmo.load_rows(SAMPLES / rel, split)), rel
        else:
            with Image.open(tmp_path / rel) as new, Image.open(SAMPLES / rel) as old:
                diff = np.abs(np.asarray(new, dtype=int) - np.asarray(old, dtype=int))
                assert diff.max() <= (8 if rel.suffix == ".jpg" else 0), rel


# --------------------------------------------------------------------------------------------------------------------
# One test per dataset: rows -> Examples with Molmo's messages and the ground truth in meta.
# --------------------------------------------------------------------------------------------------------------------


def test_pixmo_cap_gives_the_caption_and_one_seeded_transcript_and_skips_the_dead_link(server, fetcher):
    data = pixmo.load_pixmo_cap(SAMPLES / "pixmo-cap", base_url=server.url, fetcher=fetcher, seed=0)
    rows = pixmo.load_rows(SAMPLES / "pixmo-cap")
    assert (len(data), data.n_rows, data.report.ok, data.report.dead) == (3, 4, 3, 1)
    assert data.report.failures == {server.url + "images/gone_0.jpg": "HTTP 404"}
    assert data.skipped == {"image not downloaded": 1}
    for ex, row in zip(data, rows):
        assert ex.task == "caption" and ex.n_annotations == 2
        assert ex.messages[0] == [Message(None, row["caption"], "long_caption")]
        (transcript,) = ex.messages[1]
        assert transcript.style == "transcript" and transcript.question is None
        assert transcript.answer == row["transcripts"][ex.meta["annotations"][1]["transcript_index"]]
        assert sha(ex.image) == sha(SAMPLES / row["image_url"])  # the downloaded file is the served one
    again = pixmo.load_pixmo_cap(SAMPLES / "pixmo-cap", base_url=server.url, fetcher=fetcher, seed=0)
    assert [ex.messages for ex in again] == [ex.messages for ex in data]
    picks = {pixmo.load_pixmo_cap(SAMPLES / "pixmo-cap", base_url=server.url, fetcher=fetcher, seed=s)[2]
             .meta["annotations"][1]["transcript_index"] for s in range(8)}
    assert len(picks) > 1  # the seed matters (scene_2 has three transcripts)


def test_pixmo_points_groups_rows_per_image_and_writes_molmo_points(server, fetcher):
    data = pixmo.load_pixmo_points(SAMPLES / "pixmo-points", base_url=server.url, fetcher=fetcher)
    rows = pixmo.load_rows(SAMPLES / "pixmo-points")
    assert len(data) == 2 and [ex.n_annotations for ex in data] == [3, 2]  # scene_0: rows 0, 1, 3; scene_1: 2, 4
    by_image = [[r for r in rows if r["image_url"] == ex.meta["image_url"]] for ex in data]
    for ex, image_rows in zip(data, by_image):
        assert ex.meta["image_sha256"] == image_rows[0]["image_sha256"] == sha(ex.image)
        for (message,), truth, row in zip(ex.messages, ex.meta["annotations"], image_rows):
            points = [(p["x"], p["y"]) for p in row["points"]]
            np.testing.assert_allclose(np.reshape(truth["points"], (-1, 2)), np.reshape(points, (-1, 2)))
            assert truth["label"] == row["label"]
            if row["collection_method"] == "counting":
                assert message == Message(f"How many {row['label']} are there?", count_to_text(points, row["label"]),
                                          "point_count")
                assert parse_count(message.answer) == row["count"]
            else:
                assert message == Message(f"Point to the {row['label']}", points_to_text(points, row["label"]),
                                          "pointing")
            parsed = [(p.x, p.y) for p in parse_points(message.answer)]
            np.testing.assert_allclose(np.reshape(sorted(parsed), (-1, 2)), np.reshape(sorted(points), (-1, 2)),
                                       atol=0.05)
    assert data[1].messages[1] == [Message("Point to the elephant", "There are none.", "pointing")]
    for x, y in data[0].meta["annotations"][0]["points"]:  # the points are where the red circles are drawn
        assert pixel(data[0].image, (x, y)) == (215, 45, 45)


def test_pixmo_points_eval_keeps_one_mask_per_object(server, fetcher):
    data = pixmo.load_pixmo_points_eval(SAMPLES / "pixmo-points-eval", base_url=server.url, fetcher=fetcher)
    assert data.split == "test" and len(data) == 2
    for ex in data:
        (truth,) = ex.meta["annotations"]
        masks = truth["masks"]
        assert masks.dtype == bool and masks.shape == (len(truth["points"]), 60, 80)
        assert ex.messages[0][0].style == "pointing" and ex.task == "pointing_eval"
        assert all(match_points(truth["points"], truth["points"], masks=masks).hits)  # every point is in its object


def test_pixmo_count_turns_pixel_points_into_percent_with_the_image_size(server, fetcher):
    data = pixmo.load_pixmo_count(SAMPLES / "pixmo-count", base_url=server.url, fetcher=fetcher)
    rows = pixmo.load_rows(SAMPLES / "pixmo-count")
    for ex, row in zip(data, rows):
        with Image.open(ex.image) as img:
            width, height = img.size
        pixels = list(zip(row["points"]["x"], row["points"]["y"]))
        percent = [(x / width * 100, y / height * 100) for x, y in pixels]
        ((message,),), (truth,) = ex.messages, ex.meta["annotations"]
        np.testing.assert_allclose(truth["points"], percent)
        assert truth["count"] == row["count"] == len(pixels)
        assert message == Message(f"How many {row['label']} are there?", count_to_text(percent, row["label"]),
                                  "point_count")
        assert ex.task == "counting" and parse_count(message.answer) == row["count"]
        colour = (45, 85, 210) if row["label"] == "squares" else (40, 160, 70)
        assert all(np.abs(np.subtract(pixel(ex.image, p), colour)).max() < 40 for p in percent)  # JPEG: near
    (val,) = pixmo.load_pixmo_count(SAMPLES / "pixmo-count", "validation", base_url=server.url, fetcher=fetcher)
    assert val.messages == [[Message("How many circles are there?", "3", "point_count")]]  # eval rows: no points
    assert val.meta["annotations"] == [{"label": "circles", "points": [], "count": 3}]


def test_pixmo_docs_decodes_the_image_in_the_row_and_styles_by_config():
    for config in pixmo.DOCS_CONFIGS:
        rows = pixmo.load_rows(SAMPLES / "pixmo-docs", "train", config)
        data = pixmo.load_pixmo_docs(SAMPLES / "pixmo-docs", config)
        assert len(data) == len(rows) and data.report.total == 0  # nothing downloaded
        for ex, row in zip(data, rows):
            qas = list(zip(row["questions"]["question"], row["questions"]["answer"]))
            assert ex.messages == [[Message(q, a, f"pixmo_docs_{config}")] for q, a in qas]
            assert ex.image.dtype == np.uint8 and ex.image.shape == (row["image"].height, row["image"].width, 3)
            assert np.array_equal(ex.image, np.asarray(row["image"].convert("RGB")))
            assert ex.meta["image_id"] == row["image_id"] and ex.task == "doc_qa"
    with pytest.raises(ValueError, match="config must be one of"):
        pixmo.load_pixmo_docs(SAMPLES / "pixmo-docs", "posters")


def test_pixmo_clocks_answers_the_time_as_the_watch_shows_it():
    rows = pixmo.load_rows(SAMPLES / "pixmo-clocks")
    data = pixmo.load_pixmo_clocks(SAMPLES / "pixmo-clocks")
    assert [ex.messages[0][0] for ex in data] == [Message("What time is being shown?", r["text"], "clocks")
                                                  for r in rows]
    for ex, row in zip(data, rows):
        hour, minute, second = pixmo.parse_watch_time(row["watch_time"])
        assert pixmo.clock_answer(hour, minute, second, row["time_format"], row["shows_seconds"]) == row["text"]
        truth = ex.meta["annotations"][0]
        assert (truth["hour24"], truth["minute"]) == (hour, minute) and truth["hour"] == (hour % 12 or 12)
        assert truth["second"] == (second if row["shows_seconds"] else None) and truth["face"] == row["watchface_name"]
        assert Path(ex.image).name == pixmo.clock_image_name(row["example_id"]) and Path(ex.image).is_file()
    assert data[2].meta["annotations"][0]["hour24"] == 23 and data[2].messages[0][0].answer == "11:57:04 PM"
    # The viewer's own rows: midnight is 12, seconds only when shown, AM/PM only when the format says so.
    assert pixmo.clock_answer(0, 10, 0, "Without AM/PM", True) == "12:10:00"
    assert pixmo.clock_answer(12, 9, 34, "Without AM/PM", False) == "12:09"
    assert pixmo.clock_answer(7, 57, 39, "With AM/PM", True) == "7:57:39 AM"
    assert pixmo.parse_watch_time("003_2020-06-28T08:15:30") == (8, 15, 30)


def test_pixmo_clocks_without_rendered_images_are_skipped_or_kept_without_image(tmp_path):
    skipped = pixmo.load_pixmo_clocks(SAMPLES / "pixmo-clocks", image_dir=tmp_path)
    assert len(skipped) == 0 and skipped.skipped == {"no image": 3}
    kept = pixmo.load_pixmo_clocks(SAMPLES / "pixmo-clocks", image_dir=tmp_path, require_image=False)
    assert len(kept) == 3 and all(ex.image is None for ex in kept)


def test_pixmo_ask_model_anything_puts_every_question_about_an_image_together(server, fetcher):
    data = pixmo.load_pixmo_ask_model_anything(SAMPLES / "pixmo-ask-model-anything", base_url=server.url,
                                               fetcher=fetcher)
    rows = pixmo.load_rows(SAMPLES / "pixmo-ask-model-anything")
    assert [ex.n_annotations for ex in data] == [2, 1, 1]
    assert [m for ex in data for (m,) in ex.messages] == [Message(r["question"], r["answer"], "user_qa") for r in rows]


def test_pixmo_cap_qa_reads_the_conversation_in_the_question(server, fetcher):
    data = pixmo.load_pixmo_cap_qa(SAMPLES / "pixmo-cap-qa", base_url=server.url, fetcher=fetcher)
    assert data[0].messages == [[Message("What colour are the circles?", "They are red.", "user_qa"),
                                 Message("And the square?", "The square is blue.", "user_qa")]]
    assert data[1].messages == [[Message("What is in the bottom right corner?", "A yellow circle.", "user_qa")]]
    assert pixmo.cap_qa_turns("Plain question?", "Yes.") == [("Plain question?", "Yes.")]
    assert pixmo.cap_qa_turns("No tags", "a2", ["q1", "a1", "q2", "a2"]) == [("q1", "a1"), ("q2", "a2")]
    with pytest.raises(pixmo.SkipRow):
        pixmo.cap_qa_turns("[USER] q1 [USER] q2", "a")


def test_pixmo_point_explanations_write_their_points_inline(server, fetcher):
    data = pixmo.load_pixmo_point_explanations(SAMPLES / "pixmo-point-explanations", base_url=server.url,
                                               fetcher=fetcher)
    assert len(data) == 1 and data.skipped == {"no parsed_response": 1}
    row = pixmo.load_rows(SAMPLES / "pixmo-point-explanations")[0]
    circles, square = ([(p["x"], p["y"]) for p in group] for group in row["points"])
    expected = (f"The red shapes are the {points_to_text(circles, 'three circles', alt='red circles')} on the left; "
                f"the {points_to_text(square, 'square', alt='blue square')} is blue.")
    assert data[0].messages == [[Message(row["question"], expected, "point_qa")]]
    assert [p.alt for p in parse_points(expected)] == ["red circles"] * 3 + ["blue square"]


# --------------------------------------------------------------------------------------------------------------------
# Downloads: failures counted and skipped, waits capped, cache reused.
# --------------------------------------------------------------------------------------------------------------------


def test_download_report_counts_dead_links_wrong_sha_timeouts_and_throttling(server, fetcher, tmp_path):
    good = {"image_sha256": sha(SAMPLES / "images/scene_0.png"), "question": "What is this?", "answer": "Shapes."}
    rows = [
        {**good, "image_url": "images/scene_0.png"},
        {**good, "image_url": "dead/scene_0.png"},  # 404
        {**good, "image_url": "images/scene_1.png"},  # served fine, but not the image the row's sha256 names
        {**good, "image_url": "slow/scene_0.png"},  # answers after SLOW_SECONDS, far past the timeout
        {**good, "image_url": "busy/scene_0.png"},  # 429 with Retry-After: 100000, every time
        {**good, "image_url": "busy-once/images/scene_0.png"},  # 503 + Retry-After: 100000 once, then the image
        {**good, "image_url": "images/scene_0.png", "question": "And the colours?"},  # same image: one download
    ]
    source = write_rows(rows, tmp_path / "ama.parquet")
    start = time.monotonic()
    data = pixmo.load_pixmo_ask_model_anything(source, base_url=server.url, fetcher=fetcher)
    elapsed = time.monotonic() - start
    report = data.report
    assert (report.ok, report.dead, report.sha_mismatch, report.timeout, report.total) == (2, 2, 1, 1, 6)
    # Retry-After: 100000 was capped at max_wait (0.2 s), never obeyed; the bound is far below 100000 s but leaves a
    # loaded CI machine room (5 s failed once there: 5.6 s, most of it importing the parquet reader)
    assert elapsed < 60
    reasons = {url.removeprefix(server.url): why for url, why in report.failures.items()}
    assert reasons["dead/scene_0.png"] == "HTTP 404" and reasons["busy/scene_0.png"] == "HTTP 429"
    assert reasons["images/scene_1.png"].startswith("sha256") and "no answer within" in reasons["slow/scene_0.png"]
    assert [ex.meta["image_url"] for ex in data] == ["images/scene_0.png", "busy-once/images/scene_0.png"]
    assert data[0].n_annotations == 2 and data.skipped == {"image not downloaded": 4}
    assert server.requests("busy/scene_0.png") == 2 and server.requests("busy-once/images/scene_0.png") == 2
    assert server.requests("dead/scene_0.png") == 1  # a 404 is final: no retry
    assert len(fetcher.session.cookies) == 0  # nothing for the worker threads to write to the shared session
    assert "6 image URLs: 2 ok (0 from the cache), 2 dead, 1 with a wrong sha256, 1 timed out" in data.summary()


def test_second_load_reuses_the_cache_without_a_request(server, fetcher):
    first = pixmo.load_pixmo_points_eval(SAMPLES / "pixmo-points-eval", base_url=server.url, fetcher=fetcher)
    before = server.requests("images/eval_0.png")
    second = pixmo.load_pixmo_points_eval(SAMPLES / "pixmo-points-eval", base_url=server.url, fetcher=fetcher)
    assert server.requests("images/eval_0.png") == before
    assert (second.report.ok, second.report.cached) == (2, 2) and first.report.cached == 0
    assert [ex.image for ex in second] == [ex.image for ex in first]
    # A cached file that no longer matches its sha256 (corrupted on disk) is fetched again.
    first[0].image.write_bytes(b"not the image")
    third = pixmo.load_pixmo_points_eval(SAMPLES / "pixmo-points-eval", base_url=server.url, fetcher=fetcher)
    assert (third.report.ok, third.report.cached) == (2, 1) and server.requests("images/eval_0.png") == before + 1


def test_fetch_refuses_non_images_and_other_schemes(server, fetcher):
    result = fetcher.fetch(server.url + "README.md")  # no sha256 to check: the file must at least be an image
    assert (result.status, result.reason) == ("dead", "not an image")
    assert fetcher.fetch("ftp://example.com/a.png").status == "dead"
    assert fetcher.fetch("http://127.0.0.1:1/nothing-listens-here.png").status == "dead"
    patient = ImageFetcher(cache_dir=fetcher.cache_dir, retries=3, backoff=1000.0, max_wait=5.0)
    start = time.monotonic()
    refused = patient.fetch("http://127.0.0.1:1/nothing-listens-here.png")
    assert refused.status == "dead" and "NewConnectionError" in refused.reason
    assert time.monotonic() - start < 2  # a refused connection is final: no retry, no 5 s waits


def test_server_errors_are_retried_with_capped_backoff_and_a_short_retry_after_is_obeyed(server, tmp_path):
    # Two 500s without Retry-After: urllib3 backs off 0 s, then 1000 * 2 s capped at max_wait (0.2 s).
    fetcher = ImageFetcher(cache_dir=tmp_path / "a", timeout=0.3, retries=2, backoff=1000.0, max_wait=0.2)
    start = time.monotonic()
    assert fetcher.fetch(server.url + "flaky/images/scene_0.png").status == "ok"
    assert time.monotonic() - start < 5 and server.requests("flaky/images/scene_0.png") == 3
    # A 503 with Retry-After: 1 (under max_wait) is waited out, then the image comes.
    fetcher = ImageFetcher(cache_dir=tmp_path / "b", timeout=0.3, retries=1, backoff=0.0, max_wait=5.0)
    start = time.monotonic()
    assert fetcher.fetch(server.url + "wait-once/images/scene_0.png").status == "ok"
    assert time.monotonic() - start >= 0.9 and server.requests("wait-once/images/scene_0.png") == 2
    # An unreadable Retry-After: urllib3 gives up on the URL, which is counted dead; the load goes on.
    garbled = fetcher.fetch(server.url + "garbled/images/scene_0.png")
    assert garbled.status == "dead" and "Retry-After" in garbled.reason


def test_a_body_that_stalls_or_outlasts_the_deadline_is_a_timeout(server, fetcher):
    stalled = fetcher.fetch(server.url + "stall/images/scene_0.png")  # a read in the middle of the body times out
    assert (stalled.status, stalled.reason) == ("timeout", "no answer within 0.3 s")
    start = time.monotonic()
    trickled = fetcher.fetch(server.url + "trickle/x.png")  # deadline_factor 3 * timeout 0.3 s for the whole file
    assert (trickled.status, trickled.reason) == ("timeout", "took longer than 0.9 s")
    assert time.monotonic() - start < 2.5  # the server would take 3.2 s
    assert not fetcher.cache_dir.exists()  # failures are not cached


def test_files_over_max_bytes_are_refused(server, tmp_path):
    small = ImageFetcher(cache_dir=tmp_path, timeout=0.3, max_bytes=100)
    urls = [server.url + "images/scene_0.png",  # refused by its Content-Length
            server.url + "no-length/images/scene_0.png",  # no Content-Length: refused while it streams in
            (SAMPLES / "images/scene_0.png").as_uri()]  # a file:// URL, read from disk
    for url in urls:
        result = small.fetch(url)
        assert (result.status, result.reason) == ("dead", "larger than 100 bytes"), url
    assert not any(tmp_path.iterdir())


def test_file_urls_and_folders_load_the_samples_offline_without_a_server(tmp_path):
    by_uri = pixmo.load_pixmo_points(SAMPLES / "pixmo-points", base_url=SAMPLES.as_uri(), cache_dir=tmp_path / "a")
    by_folder = pixmo.load_pixmo_points(SAMPLES / "pixmo-points", base_url=SAMPLES, cache_dir=tmp_path / "b")
    assert len(by_uri) == len(by_folder) == 2 and by_uri.report.ok == by_folder.report.ok == 2
    assert [ex.messages for ex in by_uri] == [ex.messages for ex in by_folder]


# --------------------------------------------------------------------------------------------------------------------
# Bad input: clear errors, documented repairs.
# --------------------------------------------------------------------------------------------------------------------


def test_missing_files_wrong_splits_and_wrong_schemas_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        pixmo.load_pixmo_points(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match=r"no 'test' files .*\['train', 'validation'\]"):
        pixmo.load_pixmo_count(SAMPLES / "pixmo-count", "test")
    with pytest.raises(ValueError, match="not this dataset's schema"):
        pixmo.load_pixmo_points(SAMPLES / "pixmo-cap")
    with pytest.raises(ValueError, match=r"no 'posters' folder .*'charts'"):
        pixmo.load_rows(SAMPLES / "pixmo-docs", "train", "posters")
    with pytest.raises(ValueError, match="unknown PixMo dataset"):
        pixmo.load_pixmo("pixmo-everything")


def test_an_unreachable_hub_id_says_to_pass_a_local_file(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/pixmo-points' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubUnavailableError, match="Pass a local file or folder .* data_samples/pixmo/pixmo-points"):
        pixmo.load_pixmo_points()


def test_points_a_hair_outside_0_100_are_clipped_and_pixel_points_skip_the_row(server, fetcher, tmp_path):
    row = {"image_url": "images/scene_0.png", "image_sha256": sha(SAMPLES / "images/scene_0.png"), "count": 1,
           "label": 'the "big" <red> circle', "collection_method": "pointing"}
    rows = [{**row, "points": [{"x": 100.4, "y": 50.0}]}, {**row, "points": [{"x": 350.0, "y": 50.0}]}]
    data = pixmo.load_pixmo_points(write_rows(rows, tmp_path / "points.parquet"), base_url=server.url,
                                   fetcher=fetcher)
    assert data.skipped == {"points outside 0-100": 1} and data[0].n_annotations == 1
    (message,), truth = data[0].messages[0], data[0].meta["annotations"][0]
    assert message.answer == "<point x=\"100.0\" y=\"50.0\" alt=\"the 'big' red circle\">the 'big' red circle</point>"
    assert truth["label"] == row["label"] and truth["points"] == [(100.0, 50.0)]


def test_limit_reads_only_the_first_rows_and_the_report_prints(server, fetcher):
    data = pixmo.load_pixmo_ask_model_anything(SAMPLES / "pixmo-ask-model-anything", limit=2, base_url=server.url,
                                               fetcher=fetcher)
    assert data.n_rows == 2 and len(data) == 1 and data.report.total == 1
    assert str(DownloadReport(ok=3, cached=1, dead=2)) == (
        "5 image URLs: 3 ok (1 from the cache), 2 dead, 0 with a wrong sha256, 0 timed out")
    with pytest.raises(ValueError, match="cache_dir or fetcher"):
        pixmo.load_pixmo_cap(SAMPLES / "pixmo-cap", cache_dir="x", fetcher=fetcher)

"""The real PixMo datasets: read through ``datasets``, their rows turned into ``Example``s (chapter 07).

PixMo is the data Molmo was fine-tuned on, published as Hugging Face datasets (allenai/pixmo-*; columns from the dataset
cards and viewers). Molmo reads them in allenai/molmo olmo/data/pixmo_datasets.py (rows -> messages) and
olmo/data/download_urls.py (URL download, sha256 check, grouping per image). What each loader here yields:

    dataset                    one Example per image; its annotations (prompts.Message)         style
    pixmo-cap                  the caption, then ONE transcript picked by a seeded rng          long_caption, transcript
    pixmo-points               "Point to the {label}" -> <points ...> (counting rows: How many) pointing, point_count
    pixmo-points-eval          "Point to the {label}" -> <points ...>; meta keeps the masks     pointing
    pixmo-count                "How many {label} are there?" -> Counting the <points> ...       point_count
    pixmo-docs (4 configs)     each question about the image -> its answer                      pixmo_docs_{config}
    pixmo-clocks               "What time is being shown?" -> the time as the watch shows it    clocks
    pixmo-ask-model-anything   question -> answer                                               user_qa
    pixmo-cap-qa               a conversation ("[USER] q [ASSISTANT] a [USER] q" + answer)      user_qa
    pixmo-point-explanations   question -> answer with its points written inline                point_qa

Rows about the same image (same ``image_url``; pixmo-docs and pixmo-clocks: one row per image) become ONE Example with
one annotation per row, in file order, as Molmo's ``filter_and_group_data`` does. ``Example.meta`` holds the image's
``image_url`` / ``image_sha256`` (pixmo-docs: ``image_id``, pixmo-clocks: ``example_id``) and ``annotations``: one
dict of ground truth per annotation, aligned with ``Example.messages`` (label, points in 0-100, count, masks, the
clock time, the caption ...).

Decisions:

* Where the rows come from. ``source`` is a Hub id (``allenai/pixmo-points``, read with ``datasets.load_dataset`` when
  online) or a local file / folder in the same schema (parquet as the Hub serves it, or json/jsonl/csv), also read by
  ``datasets.load_dataset`` (``"parquet"``, ``data_files=...``). A folder's files are picked by split from their names
  (``train-00000-of-00001.parquet``); pixmo-docs has a sub-folder per config. Offline, a Hub id fails with a message
  saying to pass a local file; data_samples/pixmo/ holds a few rows of every dataset.
* Point units. pixmo-points' card says its points are pixels, yet every official loader gives them
  ``point_scale=100`` and the viewer shows values like 79.9 on large images: we read pixmo-points, pixmo-points-eval
  and pixmo-point-explanations as 0-100. pixmo-count's points really are pixels (its loader has no point scale): we
  divide by the downloaded image's width and height. Coordinates a hair outside 0-100 are clipped (Molmo2 clips all);
  a row with a point further out (pixels passed by mistake?) is skipped and counted in ``skipped``.
* Pointing labels are lower-cased as Molmo's ``format_points`` does (the words of point explanations keep their case,
  as in its ``format_annotated_text``); a ``"`` becomes ``'`` and ``<`` / ``>`` are dropped, since ``points_to_text``
  cannot write them (``meta`` keeps the label as it was).
* Prompts are fixed ("Point to the {label}", "How many {label} are there?", "What time is being shown?"); Molmo draws
  them from templates when it formats a batch, which belongs to training, not to loading.
* Images at URLs are downloaded with ``requests`` (``ImageFetcher``), whose urllib3 ``Retry`` does a bounded number
  of retries for 429 / 5xx / read timeouts, and waits (backoff or a ``Retry-After`` header) capped at ``max_wait``
  seconds, so that a far-future Retry-After cannot stall a download; a timeout on every connection and read, plus a
  deadline for the whole file and a size limit, checked while the body streams in.
  A file is checked against ``image_sha256`` when the dataset has one, else opened with PIL, then cached on disk
  (``DEFAULT_CACHE_DIR``; the file name is the sha256 of the URL, as Molmo's), so a second load makes no request.
  Dead links (about 22% of pixmo-cap's URLs, molmo issue #37), HTTP errors, timeouts and files with a wrong sha256 are
  skipped and counted in a ``DownloadReport``; failures are not cached, so a later load tries them again.
  ``base_url`` resolves relative URLs (the samples' ``images/scene_0.png``): an ``http://127.0.0.1:PORT/`` server in
  the tests, or a local folder (read through its ``file://`` URL) for notebooks offline.
* pixmo-clocks has NO images on the Hub (its card: the rows are the metadata to render watch faces with facer.io), and
  pixmo-docs keeps its image in the row. A clock row's image is its ``image`` column if the file has one, else
  ``image_dir/clock_image_name(example_id)`` (data_samples/pixmo/pixmo-clocks/images holds faces drawn with PIL); rows
  without an image are skipped, or kept with ``image=None`` when ``require_image=False``. The answer is the row's
  ``text`` ("8:15:30", "12:09", "11:57:04 PM", which is how Molmo writes it), else ``clock_answer`` rebuilds it from
  ``watch_time``, ``time_format`` and ``shows_seconds``.
* Left to training, as Molmo does it there: shuffling the annotations, the "No pointing: " prefix on "how many"
  questions of the QA sets, splitting large point-explanation groups in two, and holding pixmo-points-eval's images out
  of pixmo-points.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import io
import os
import re
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from ..config import CHECKPOINT_DIR
from ..pointing import as_xy, count_to_text, points_to_text
from ..prompts import Message
from .examples import Example

HUB_IDS = {
    name: f"allenai/{name}" for name in (
        "pixmo-cap", "pixmo-points", "pixmo-points-eval", "pixmo-count", "pixmo-docs", "pixmo-clocks",
        "pixmo-ask-model-anything", "pixmo-cap-qa", "pixmo-point-explanations")
}
DOCS_CONFIGS = ("charts", "tables", "diagrams", "other")
# Where downloaded images are kept (not committed): $MOLMO_LITE_PIXMO_CACHE, else checkpoints/pixmo_images.
DEFAULT_CACHE_DIR = Path(os.environ.get("MOLMO_LITE_PIXMO_CACHE", CHECKPOINT_DIR / "pixmo_images"))
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})  # worth another try; any other HTTP error is a dead link
URL_SCHEMES = ("http", "https", "file")
MAX_WORKERS = 16  # parallel downloads are capped: many hosts throttle, and a course machine is small
POINT_TOLERANCE = 1.0  # points up to this far outside 0-100 are clipped; further out, the row is skipped
LOCAL_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}
SPLIT_NAMES = ("train", "validation", "test")
POINT_MARK = "<|POINT|>"  # where pixmo-point-explanations' parsed_response puts each annotation's points
CLOCK_PROMPT = "What time is being shown?"


# --------------------------------------------------------------------------------------------------------------------
# 1. Reading the rows (Hugging Face Hub, or a local file / folder of the same schema).
# --------------------------------------------------------------------------------------------------------------------


class HubUnavailableError(ConnectionError):
    """A Hub id could not be loaded (offline, or unknown): pass a local file or folder in the same schema instead."""


def _split_of(path: Path) -> str | None:
    """The split a data file belongs to, from its name ('train-00000-of-00004.parquet', 'test.jsonl') or folder."""
    for name in (path.name, path.parent.name):
        head = re.split(r"[-_.]", name, maxsplit=1)[0].lower()
        if head in SPLIT_NAMES:
            return head
    return None


def local_data_files(path: Path, split: str, config: str | None = None) -> tuple[str, list[str]]:
    """A local file or folder -> (datasets builder name, files of ``split``).

    A single file is read as the requested split whatever its name. A folder (``config``: its sub-folder, as the Hub
    lays out pixmo-docs) gives the files whose name or parent folder starts with the split name. FileNotFoundError /
    ValueError name what is missing."""
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        files = [path]
    else:
        root = path
        if config and (path / config).is_dir():
            root = path / config
        elif config and any(p.is_dir() for p in path.iterdir()):
            folders = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise ValueError(f"no {config!r} folder under {path} (folders: {folders})")
        candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in LOCAL_FORMATS)
        if not candidates:
            raise FileNotFoundError(f"no data files ({', '.join(LOCAL_FORMATS)}) under {root}")
        files = [p for p in candidates if _split_of(p) == split]
        if not files:
            found = sorted({s for s in map(_split_of, candidates) if s})
            raise ValueError(f"no {split!r} files under {root} (splits found: {found or 'none'})")
    formats = {LOCAL_FORMATS.get(p.suffix) for p in files}
    if None in formats or len(formats) != 1:
        raise ValueError(f"cannot read {[p.name for p in files]}: need one format among {sorted(LOCAL_FORMATS)}")
    return formats.pop(), [str(p) for p in files]


def _looks_like_hub_id(source: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source) is not None and not Path(source).suffix


def load_rows(source: str | Path, split: str = "train", config: str | None = None,
              required: Sequence[str] = ()) -> Any:
    """The rows of a PixMo dataset as a ``datasets.Dataset``, from a Hub id or a local file / folder.

    required: columns the loader needs; a file without them raises ValueError (not this dataset's schema).
    """
    import datasets

    path = Path(source)
    if path.exists() or not _looks_like_hub_id(str(source)):
        builder, files = local_data_files(path, split, config)
        quiet = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a few local rows: no "Generating train split" bar (it shows only uncached)
        try:
            rows = datasets.load_dataset(builder, data_files={split: files}, split=split)
        finally:
            if not quiet:
                datasets.enable_progress_bars()
    else:
        try:
            rows = datasets.load_dataset(str(source), name=config, split=split)
        except Exception as err:  # offline, unknown id, gated: all mean "use a local file"
            raise HubUnavailableError(
                f"could not load {source!r} (config={config}, split={split}) from the Hugging Face Hub: "
                f"{type(err).__name__}: {err}. Offline? Pass a local file or folder in the same schema instead, "
                f"e.g. data_samples/pixmo/{str(source).split('/')[-1]}") from err
    missing = [c for c in required if c not in rows.column_names]
    if missing:
        raise ValueError(f"{source} has no column {missing} (columns: {rows.column_names}): not this dataset's schema")
    return rows


# --------------------------------------------------------------------------------------------------------------------
# 2. Downloading images: bounded retries, capped waits, sha256 check, disk cache, counted failures.
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class DownloadReport:
    """What happened to the image URLs of one load: ``ok`` images are usable (``cached`` of them came from disk);
    ``dead`` (HTTP error, refused, not an image), ``sha_mismatch`` and ``timeout`` were skipped. ``failures`` maps each
    skipped URL to its reason."""

    ok: int = 0
    cached: int = 0
    dead: int = 0
    sha_mismatch: int = 0
    timeout: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.ok + self.dead + self.sha_mismatch + self.timeout

    @property
    def skipped(self) -> int:
        return self.total - self.ok

    def add(self, result: FetchResult) -> None:
        """Count one URL's result."""
        if result.status == "ok":
            self.ok += 1
            self.cached += result.cached
        else:
            setattr(self, result.status, getattr(self, result.status) + 1)
            self.failures[result.url] = result.reason

    def __str__(self) -> str:
        return (f"{self.total} image URLs: {self.ok} ok ({self.cached} from the cache), {self.dead} dead, "
                f"{self.sha_mismatch} with a wrong sha256, {self.timeout} timed out")


@dataclass(frozen=True)
class FetchResult:
    """One URL: status "ok" (path set), "dead", "sha_mismatch" or "timeout" (reason set)."""

    url: str
    status: str
    path: Path | None = None
    reason: str = ""
    cached: bool = False


class _Failed(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_image(data: bytes) -> bool:
    """Whether PIL recognises the bytes as an image of non-zero size (reads the header only)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return min(img.size) > 0
    except Exception:  # noqa: BLE001  (any decoder error means "not an image")
        return False


@dataclass
class ImageFetcher:
    """Downloads image URLs into ``cache_dir`` through ``requests``.

    What the library does (one ``requests.Session`` whose ``HTTPAdapter`` has a ``urllib3.util.Retry``): up to
    ``retries`` further tries after a 429 / 5xx status (``RETRY_STATUSES``) or a read that times out before the
    response headers (a refused connection, an unknown host or a connect timeout is final). Between tries it waits the
    ``Retry-After`` header (on 429 and 503; seconds or an HTTP date), else urllib3's backoff (none before the first
    retry, then ``backoff * 2``, ``backoff * 4`` ... seconds), either capped at ``max_wait`` seconds
    (``retry_after_max``, ``backoff_max``), so that a far-future Retry-After cannot stall a download. ``timeout``:
    seconds for connecting and for every read (``timeout=(connect, read)``). A status still failing after the retries
    is counted as that HTTP status (``raise_on_status=False``); other HTTP errors are final.

    What the class still does itself: the URL-scheme check (``URL_SCHEMES``; ``file://`` URLs are read from disk, which
    requests does not do), the body streamed in chunks against ``max_bytes`` (larger files are refused) and a deadline
    of ``deadline_factor * timeout`` for the whole file (a stall or the deadline in the middle of the body is final, not
    retried), the sha256 / PIL check, the atomic disk cache, the classification of failures into FetchResult statuses,
    and ``workers`` parallel downloads (at most ``MAX_WORKERS``). The settings are read when the fetcher is made.
    """

    cache_dir: Path = DEFAULT_CACHE_DIR
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    max_wait: float = 10.0
    workers: int = 4
    deadline_factor: float = 3.0
    max_bytes: int = 50 * 2**20
    user_agent: str = "molmo_lite/0.1 (Molmo course; PixMo image download)"
    session: requests.Session = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        if self.timeout <= 0 or self.retries < 0 or self.max_wait < 0 or self.workers < 1:
            raise ValueError("need timeout > 0, retries >= 0, max_wait >= 0 and workers >= 1")
        # connect=0: a refused connection, an unknown host or a connect timeout is final (a dead link costs no waits);
        # reads that time out before the headers and RETRY_STATUSES are retried, up to ``retries`` in all.
        retry = Retry(total=self.retries, connect=0, allowed_methods={"GET"}, status_forcelist=RETRY_STATUSES,
                      backoff_factor=self.backoff, backoff_max=self.max_wait, respect_retry_after_header=True,
                      retry_after_max=self.max_wait, raise_on_status=False)
        # One Session shared by the worker threads rather than one per thread: its adapter's urllib3 pool is
        # thread-safe and keeps up to MAX_WORKERS connections, reused by the next load; headers, adapters and the retry
        # policy are only read. What requests writes on every response is the session's cookie jar, which another
        # thread may be iterating at that moment (psf/requests#2766): a policy that accepts no cookie keeps it empty
        # (image downloads need none; a redirect still carries its cookies in the request's own jar).
        self.session = requests.Session()
        self.session.headers["User-Agent"] = self.user_agent
        self.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = HTTPAdapter(max_retries=retry, pool_connections=MAX_WORKERS, pool_maxsize=MAX_WORKERS)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def cache_path(self, url: str) -> Path:
        """Where a URL's image is cached: the sha256 of the URL, as Molmo names its files."""
        return self.cache_dir / sha256_hex(url.encode("utf-8"))

    def fetch(self, url: str, sha256: str | None = None) -> FetchResult:
        """One URL -> FetchResult: from the cache when a verified copy is there, else downloaded, checked, cached."""
        path = self.cache_path(url)
        if path.is_file():
            if self._problem(path.read_bytes(), sha256) is None:
                return FetchResult(url, "ok", path, cached=True)
            path.unlink(missing_ok=True)  # a stale or corrupt copy: download again
        try:
            data = self._download(url)
        except _Failed as failed:
            return FetchResult(url, failed.status, reason=failed.reason)
        problem = self._problem(data, sha256)
        if problem is not None:
            return FetchResult(url, problem[0], reason=problem[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a crash never leaves half an image in the cache
        return FetchResult(url, "ok", path)

    def fetch_all(self, urls: Mapping[str, str | None], report: DownloadReport | None = None) -> dict[str, Path]:
        """{url: expected sha256 or None} -> {url: cached file} for the URLs that worked; every result is counted in
        ``report``. Runs ``workers`` downloads at a time."""
        report = DownloadReport() if report is None else report
        items = list(urls.items())
        workers = max(1, min(self.workers, MAX_WORKERS, len(items)))
        if workers == 1:
            results = [self.fetch(url, sha) for url, sha in items]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda item: self.fetch(*item), items))
        for result in results:
            report.add(result)
        return {r.url: r.path for r in results if r.status == "ok"}

    @staticmethod
    def _problem(data: bytes, sha256: str | None) -> tuple[str, str] | None:
        """None when the bytes are the image (its sha256, or else readable by PIL), else (status, reason)."""
        if sha256:
            got = sha256_hex(data)
            return None if got == sha256.lower() else ("sha_mismatch", f"sha256 {got[:12]}... != {sha256[:12]}...")
        return None if is_image(data) else ("dead", "not an image")

    def _download(self, url: str) -> bytes:
        """The bytes at url (retried by the session's adapter); raises _Failed("dead" | "timeout", reason)."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in URL_SCHEMES:
            raise _Failed("dead", f"unsupported URL scheme {scheme!r} (need one of {URL_SCHEMES})")
        if scheme == "file":
            return self._read_file(parts)
        try:
            with self.session.get(url, timeout=(self.timeout, self.timeout), stream=True) as response:
                if response.status_code >= 400:
                    raise _Failed("dead", f"HTTP {response.status_code}")
                length = response.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > self.max_bytes:
                    raise _Failed("dead", f"larger than {self.max_bytes} bytes")
                deadline = time.monotonic() + self.deadline_factor * self.timeout
                chunks, size = [], 0
                for chunk in response.iter_content(1 << 16):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _Failed("dead", f"larger than {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise _Failed("timeout", f"took longer than {self.deadline_factor * self.timeout:g} s")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:  # a few urllib3 errors get through
            # requests raises ConnectionError, not Timeout, for a read timeout once urllib3 has retried it (the cause
            # is in MaxRetryError.reason) or in the middle of the body; a refused connection (NewConnectionError) is
            # a ConnectTimeoutError subclass to urllib3, but dead to us.
            cause = err.args[0] if err.args and isinstance(err.args[0], Exception) else err
            cause = getattr(cause, "reason", None) or cause
            timed_out = isinstance(err, requests.Timeout) or (
                isinstance(cause, urllib3.exceptions.TimeoutError)
                and not isinstance(cause, urllib3.exceptions.NewConnectionError))
            if timed_out:
                raise _Failed("timeout", f"no answer within {self.timeout:g} s") from None
            raise _Failed("dead", f"{type(cause).__name__}: {cause}") from None

    def _read_file(self, parts: urllib.parse.SplitResult) -> bytes:
        """A file:// URL's bytes, read from disk (requests has no file:// adapter), with the size limit."""
        if parts.netloc not in ("", "localhost"):
            raise _Failed("dead", f"file URL on another host: {parts.netloc}")
        path = Path(urllib.request.url2pathname(parts.path))
        try:
            if path.stat().st_size > self.max_bytes:
                raise _Failed("dead", f"larger than {self.max_bytes} bytes")
            return path.read_bytes()
        except OSError as err:
            raise _Failed("dead", f"{type(err).__name__}: {err}") from None


# --------------------------------------------------------------------------------------------------------------------
# 3. Rows -> Examples.
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PixmoDataset:
    """The Examples of one load, with what was left out: ``report`` counts the image URLs, ``skipped`` the rows dropped
    for other reasons (no image, no answer, points outside 0-100 ...). Indexable and iterable like a list."""

    name: str
    source: str
    split: str
    examples: list[Example]
    n_rows: int
    report: DownloadReport = field(default_factory=DownloadReport)
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def summary(self) -> str:
        """One paragraph for a notebook: rows read, examples made, downloads, skipped rows."""
        n_annotations = sum(ex.n_annotations for ex in self.examples)
        head = f"{self.name} ({self.source}, {self.split}): {self.n_rows} rows -> {len(self)} images, {n_annotations}"
        lines = [head + " annotations"]
        if self.report.total:
            lines.append(f"  {self.report}")
        if self.skipped:
            lines.append("  rows skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        return "\n".join(lines)


# An annotation: its messages (one, or a conversation) and its ground truth for meta["annotations"].
Annotation = tuple[list[Message], dict[str, Any]]


class SkipRow(ValueError):
    """A row that cannot become an annotation (raised by ``percent_points``, ``cap_qa_turns``, ``explanation_text``);
    the loaders drop the row and count the message in ``PixmoDataset.skipped``."""


def safe_label(label: str, lower: bool = True) -> str:
    """A label that ``points_to_text`` can write: '"' -> "'", no '<' or '>', lower-cased as Molmo's format_points
    does for pointing labels (``lower=False`` keeps the case, as for the words of a point explanation)."""
    label = str(label).strip().replace('"', "'").replace("<", "").replace(">", "")
    return label.lower() if lower else label


def points_xy(points: Any) -> np.ndarray:
    """PixMo's points as [N, 2]: a list of {"x", "y"} (pixmo-points), a {"x": [...], "y": [...]} dict (a Sequence
    feature, as pixmo-count is stored), or None / empty."""
    if isinstance(points, Mapping):
        return np.stack([np.asarray(points.get("x") or [], float), np.asarray(points.get("y") or [], float)], -1)
    return as_xy(points or [])


def percent_points(points: Any, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Points -> [N, 2] in 0-100: divided by (width, height) when ``image_size`` is given (pixel points), clipped
    when they overshoot 0-100 by at most POINT_TOLERANCE; SkipRow when further out."""
    xy = points_xy(points)
    if image_size is not None:
        xy = xy / np.asarray(image_size, dtype=float) * 100.0
    if not np.isfinite(xy).all() or (xy < -POINT_TOLERANCE).any() or (xy > 100 + POINT_TOLERANCE).any():
        raise SkipRow("points outside 0-100")
    return np.clip(xy, 0.0, 100.0)


def _pairs(xy: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in xy]


def _seeded_rng(seed: int, key: str) -> np.random.Generator:
    """An rng that depends only on the seed and the image (not on which other rows were loaded or dropped)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def _base_url(base_url: str | Path | None) -> str | None:
    """base_url as a URL ending in "/": an existing local folder becomes its file:// URL."""
    if base_url is None:
        return None
    if Path(base_url).is_dir():
        return Path(base_url).resolve().as_uri() + "/"
    return str(base_url) if str(base_url).endswith("/") else f"{base_url}/"


def _resolve(url: str, base_url: str | None) -> str:
    """An absolute URL: relative ones (the samples' 'images/scene_0.png') joined to base_url."""
    if base_url is None or urllib.parse.urlsplit(url).scheme:
        return url
    return urllib.parse.urljoin(base_url, url)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


# annotate(row, image_size, rng) -> the row's annotations; image_size is (width, height) when the loader needs it,
# rng is fixed by the seed, the image and the row's place among the image's rows. It raises SkipRow to drop the row.
Annotate = Callable[[dict, "tuple[int, int] | None", np.random.Generator], "list[Annotation]"]


def _from_url_rows(name: str, source: Any, split: str, rows: Any, task: str, annotate: Annotate, base_url: str | None,
                   fetcher: ImageFetcher, needs_size: bool = False, seed: int = 0) -> PixmoDataset:
    """Group rows by image_url, download each image once, and make one Example per image that worked, with one
    annotation per row (``annotate``); the rest is counted in the dataset's report and ``skipped``."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["image_url"], []).append(row)
    data = PixmoDataset(name, str(source), split, [], n_rows=len(rows))
    shas = {url: group[0].get("image_sha256") for url, group in groups.items()}
    base_url = _base_url(base_url)
    resolved = {url: _resolve(url, base_url) for url in groups}
    files = fetcher.fetch_all({resolved[url]: shas[url] for url in groups}, data.report)
    for url, group in groups.items():
        path = files.get(resolved[url])
        if path is None:
            data.skipped["image not downloaded"] += len(group)
            continue
        size = _image_size(path) if needs_size else None
        annotations = []
        for k, row in enumerate(group):
            if row.get("image_sha256") != shas[url]:
                data.skipped["image_sha256 differs from the image's first row"] += 1
                continue
            try:
                annotations += annotate(row, size, _seeded_rng(seed, f"{url}#{k}"))
            except SkipRow as why:
                data.skipped[str(why)] += 1
        if annotations:
            meta = {"image_url": url, "image_sha256": shas[url], "annotations": [a for _, a in annotations]}
            data.examples.append(Example(path, [m for m, _ in annotations], task, meta))
    return data


def _fetcher(fetcher: ImageFetcher | None, cache_dir: str | Path | None) -> ImageFetcher:
    if fetcher is not None and cache_dir is not None:
        raise ValueError("pass cache_dir or fetcher, not both (the fetcher has its own cache_dir)")
    return fetcher or ImageFetcher(**({} if cache_dir is None else {"cache_dir": Path(cache_dir)}))


def _limited(rows: Any, limit: int | None) -> Any:
    """The first ``limit`` rows (all when None): a few rows of a 700k-row dataset without downloading 700k images."""
    return rows if limit is None else rows.select(range(min(int(limit), len(rows))))


# --------------------------------------------------------------------------------------------------------------------
# 4. One loader per dataset. All take: source (Hub id or local file / folder), split, limit (first rows only),
#    base_url (for relative image URLs), cache_dir or fetcher (downloads). They return a PixmoDataset.
# --------------------------------------------------------------------------------------------------------------------


def load_pixmo_cap(source: str | Path = HUB_IDS["pixmo-cap"], split: str = "train", *, seed: int = 0,
                   limit: int | None = None, base_url: str | None = None, cache_dir: str | Path | None = None,
                   fetcher: ImageFetcher | None = None) -> PixmoDataset:
    """pixmo-cap (image_url, caption, transcripts) -> per image: the caption as Message(None, caption, "long_caption")
    and ONE of its transcripts as Message(None, t, "transcript"), drawn with an rng fixed by ``seed`` and the image
    (Molmo's "transcript_and_caption" mode, stage 1). meta annotations: {"kind", "caption" | "transcript",
    "transcript_index"}."""

    def annotate(row: dict, _: Any, rng: np.random.Generator) -> list[Annotation]:
        caption, transcripts = row.get("caption"), list(row.get("transcripts") or [])
        if not caption:
            raise SkipRow("no caption")
        out: list[Annotation] = [([Message(None, caption, "long_caption")], {"kind": "caption", "caption": caption})]
        usable = [i for i, t in enumerate(transcripts) if t]
        if usable:
            i = usable[int(rng.integers(len(usable)))]
            out.append(([Message(None, transcripts[i], "transcript")],
                        {"kind": "transcript", "transcript": transcripts[i], "transcript_index": i,
                         "n_transcripts": len(transcripts)}))
        return out

    rows = _limited(load_rows(source, split, required=("image_url", "caption", "transcripts")), limit)
    return _from_url_rows("pixmo-cap", source, split, rows, "caption", annotate, base_url,
                          _fetcher(fetcher, cache_dir), seed=seed)


def _pointing_annotation(label: str, xy: np.ndarray, counting: bool, **meta: Any) -> Annotation:
    """'Point to the {label}' -> <points> (style pointing), or 'How many {label} are there?' -> 'Counting the <points
    ...> shows a total of N.' (style point_count); meta: label, points (0-100), count and the extra keys."""
    text = safe_label(label)
    if counting:
        message = Message(f"How many {text} are there?", count_to_text(xy, text), "point_count")
    else:
        message = Message(f"Point to the {text}", points_to_text(xy, text), "pointing")
    return [message], {"label": label, "points": _pairs(xy), "count": len(xy), **meta}


def load_pixmo_points(source: str | Path = HUB_IDS["pixmo-points"], split: str = "train", *,
                      limit: int | None = None, base_url: str | None = None, cache_dir: str | Path | None = None,
                      fetcher: ImageFetcher | None = None) -> PixmoDataset:
    """pixmo-points (image_url, image_sha256, points [{x, y}] in 0-100, count, label, collection_method) -> per image,
    one annotation per row: "pointing" rows as pointing, "counting" rows as counting by pointing (point_count).
    Zero points: "There are none."."""

    def annotate(row: dict, *_: Any) -> list[Annotation]:
        counting = row.get("collection_method") == "counting"
        return [_pointing_annotation(row["label"], percent_points(row["points"]), counting,
                                     dataset_count=row.get("count"), collection_method=row.get("collection_method"))]

    rows = _limited(load_rows(source, split, required=("image_url", "image_sha256", "points", "label")), limit)
    return _from_url_rows("pixmo-points", source, split, rows, "pointing", annotate, base_url,
                          _fetcher(fetcher, cache_dir))


def load_pixmo_points_eval(source: str | Path = HUB_IDS["pixmo-points-eval"], split: str = "test", *,
                           limit: int | None = None, base_url: str | None = None,
                           cache_dir: str | Path | None = None, fetcher: ImageFetcher | None = None) -> PixmoDataset:
    """pixmo-points-eval (image_url, image_sha256, label, points in 0-100, masks) -> pointing annotations whose meta
    also holds ``masks``: bool [n_masks, H, W], one segmentation mask per object (for pointing.match_points)."""

    def annotate(row: dict, *_: Any) -> list[Annotation]:
        masks = np.asarray(row.get("masks") or np.zeros((0, 0, 0)), dtype=bool)
        return [_pointing_annotation(row["label"], percent_points(row["points"]), False, masks=masks)]

    rows = _limited(load_rows(source, split, required=("image_url", "image_sha256", "points", "label", "masks")), limit)
    return _from_url_rows("pixmo-points-eval", source, split, rows, "pointing_eval", annotate, base_url,
                          _fetcher(fetcher, cache_dir))


def load_pixmo_count(source: str | Path = HUB_IDS["pixmo-count"], split: str = "train", *,
                     limit: int | None = None, base_url: str | None = None, cache_dir: str | Path | None = None,
                     fetcher: ImageFetcher | None = None) -> PixmoDataset:
    """pixmo-count (image_url, image_sha256, count, points in PIXELS, label) -> counting by pointing: the points are
    divided by the downloaded image's (width, height) to 0-100. The validation and test rows have no points (their
    card): the answer is then the bare count, which ``pointing.parse_count`` reads; the truth is meta's ``count``."""

    def annotate(row: dict, size: tuple[int, int] | None, _: Any) -> list[Annotation]:
        xy, count = percent_points(row.get("points"), size), int(row["count"])
        if len(xy) == 0 and count > 0:
            text = safe_label(row["label"])
            return [([Message(f"How many {text} are there?", str(count), "point_count")],
                     {"label": row["label"], "points": [], "count": count})]
        return [_pointing_annotation(row["label"], xy, True)]

    rows = _limited(load_rows(source, split, required=("image_url", "image_sha256", "count", "points", "label")), limit)
    return _from_url_rows("pixmo-count", source, split, rows, "counting", annotate, base_url,
                          _fetcher(fetcher, cache_dir), needs_size=True)


def load_pixmo_ask_model_anything(source: str | Path = HUB_IDS["pixmo-ask-model-anything"], split: str = "train", *,
                                  limit: int | None = None, base_url: str | None = None,
                                  cache_dir: str | Path | None = None,
                                  fetcher: ImageFetcher | None = None) -> PixmoDataset:
    """pixmo-ask-model-anything (image_url, image_sha256, question, answer) -> Message(question, answer, "user_qa"),
    every question about an image in one Example."""

    def annotate(row: dict, *_: Any) -> list[Annotation]:
        if not row.get("question") or not row.get("answer"):
            raise SkipRow("no question or answer")
        return [([Message(row["question"], row["answer"], "user_qa")], {"question": row["question"],
                                                                        "answer": row["answer"]})]

    rows = _limited(load_rows(source, split, required=("image_url", "image_sha256", "question", "answer")), limit)
    return _from_url_rows("pixmo-ask-model-anything", source, split, rows, "qa", annotate, base_url,
                          _fetcher(fetcher, cache_dir))


_TURN = re.compile(r"\s*\[(USER|ASSISTANT)\]\s*")


def cap_qa_turns(question: str, answer: str, messages: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """One pixmo-cap-qa row -> its conversation as (question, answer) turns.

    The question holds the conversation so far, "[USER] q1 [ASSISTANT] a1 [USER] q2", and answer the last reply (as
    Molmo2 parses it); without those tags, the ``messages`` column [q1, a1, q2, a2] is used, else (question, answer).
    SkipRow when the tags are not user/assistant alternating and ending with a user turn."""
    if "[USER]" in question:
        parts = _TURN.split(question.strip())[1:]  # ['USER', q1, 'ASSISTANT', a1, 'USER', q2]
        roles, texts = parts[0::2], [t.strip() for t in parts[1::2]]
        expected = ["USER", "ASSISTANT"] * (len(roles) // 2) + ["USER"] * (len(roles) % 2)
        if roles != expected or len(roles) % 2 == 0 or not all(texts):
            raise SkipRow("malformed [USER]/[ASSISTANT] conversation")
        texts.append(answer)
        return list(zip(texts[0::2], texts[1::2]))
    if messages and len(messages) % 2 == 0:
        return list(zip(messages[0::2], messages[1::2]))
    return [(question, answer)]


def load_pixmo_cap_qa(source: str | Path = HUB_IDS["pixmo-cap-qa"], split: str = "train", *,
                      limit: int | None = None, base_url: str | None = None, cache_dir: str | Path | None = None,
                      fetcher: ImageFetcher | None = None) -> PixmoDataset:
    """pixmo-cap-qa (image_url, question, answer, messages) -> each row one annotation: its conversation as several
    Message(q, a, "user_qa") turns (``cap_qa_turns``). Molmo names this style "synthetic_qa"; we use the demo style
    user_qa, so that the style prefix is written only 10% of the time."""

    def annotate(row: dict, *_: Any) -> list[Annotation]:
        if not row.get("question") or not row.get("answer"):
            raise SkipRow("no question or answer")
        turns = cap_qa_turns(row["question"], row["answer"], row.get("messages"))
        return [([Message(q, a, "user_qa") for q, a in turns], {"turns": turns})]

    rows = _limited(load_rows(source, split, required=("image_url", "question", "answer")), limit)
    return _from_url_rows("pixmo-cap-qa", source, split, rows, "qa", annotate, base_url, _fetcher(fetcher, cache_dir))


def explanation_text(parsed_response: str, points: Sequence[Any], inline_text: Sequence[str],
                     alt_text: Sequence[str]) -> str:
    """pixmo-point-explanations' parsed_response with its k-th <|POINT|> replaced by the k-th points (0-100) written as
    Molmo does: points_to_text(points, inline_text, alt=alt_text). SkipRow when the marks and points disagree."""
    pieces = parsed_response.split(POINT_MARK)
    if not (len(pieces) - 1 == len(points) == len(inline_text) == len(alt_text)):
        raise SkipRow("<|POINT|> marks and points disagree")
    out = [pieces[0]]
    for piece, pts, inline, alt in zip(pieces[1:], points, inline_text, alt_text):
        out += [points_to_text(percent_points(pts), safe_label(inline, False), alt=safe_label(alt, False)), piece]
    return "".join(out)


def load_pixmo_point_explanations(source: str | Path = HUB_IDS["pixmo-point-explanations"], split: str = "train", *,
                                  limit: int | None = None, base_url: str | None = None,
                                  cache_dir: str | Path | None = None,
                                  fetcher: ImageFetcher | None = None) -> PixmoDataset:
    """pixmo-point-explanations (image_url, image_sha256, question, response, parsed_response, alt_text, inline_text,
    points) -> Message(question, answer with inline points, "point_qa") (``explanation_text``). Rows without a
    parsed_response are skipped, as Molmo does."""

    def annotate(row: dict, *_: Any) -> list[Annotation]:
        if not row.get("parsed_response"):
            raise SkipRow("no parsed_response")
        answer = explanation_text(row["parsed_response"], row.get("points") or [], row.get("inline_text") or [],
                                  row.get("alt_text") or [])
        points = [_pairs(percent_points(p)) for p in row.get("points") or []]
        return [([Message(row["question"], answer, "point_qa")],
                 {"question": row["question"], "points": points, "inline_text": list(row["inline_text"]),
                  "alt_text": list(row["alt_text"])})]

    required = ("image_url", "image_sha256", "question", "parsed_response", "alt_text", "inline_text", "points")
    rows = _limited(load_rows(source, split, required=required), limit)
    return _from_url_rows("pixmo-point-explanations", source, split, rows, "point_explanation", annotate, base_url,
                          _fetcher(fetcher, cache_dir))


# --------------------------------------------------------------------------------------------------------------------
# 5. The two datasets without URLs: pixmo-docs (image in the row) and pixmo-clocks (images rendered locally).
# --------------------------------------------------------------------------------------------------------------------


def _row_image(value: Any) -> np.ndarray:
    """An ``image`` cell (a PIL image as datasets decodes it, or {"bytes", "path"}) -> uint8 RGB [H, W, 3], with the
    documented repairs of preprocessing.load_image (transparency on white, EXIF rotation, grayscale)."""
    import torch

    from ..preprocessing import load_image

    if isinstance(value, Mapping):
        value = value.get("bytes") or value.get("path")
    pixels = load_image(value)  # float [3, H, W] in [0, 1]
    return (pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def qa_pairs(questions: Any) -> list[tuple[str, str]]:
    """pixmo-docs' questions column -> [(question, answer)]: a {"question": [...], "answer": [...]} dict (how the
    Sequence feature reads back) or a list of {"question", "answer"} dicts."""
    if isinstance(questions, Mapping):
        return list(zip(questions.get("question") or [], questions.get("answer") or []))
    return [(q["question"], q["answer"]) for q in questions or []]


def load_pixmo_docs(source: str | Path = HUB_IDS["pixmo-docs"], config: str = "charts", split: str = "train", *,
                    limit: int | None = None) -> PixmoDataset:
    """pixmo-docs (image, image_id, questions {question, answer}; configs charts / tables / diagrams / other) -> per
    image its questions as Message(q, a, "pixmo_docs_{config}"). The image is decoded from the row to uint8 RGB."""
    if config not in DOCS_CONFIGS:
        raise ValueError(f"config must be one of {DOCS_CONFIGS}, got {config!r}")
    rows = _limited(load_rows(source, split, config, required=("image", "image_id", "questions")), limit)
    data = PixmoDataset("pixmo-docs", str(source), split, [], n_rows=len(rows))
    style = f"pixmo_docs_{config}"
    for row in rows:
        pairs = [(q, a) for q, a in qa_pairs(row["questions"]) if q and a]
        if not pairs:
            data.skipped["no questions"] += 1
            continue
        try:
            image = _row_image(row["image"])
        except ValueError:
            data.skipped["unreadable image"] += 1
            continue
        meta = {"image_id": row["image_id"], "config": config,
                "annotations": [{"question": q, "answer": a} for q, a in pairs]}
        data.examples.append(Example(image, [[Message(q, a, style)] for q, a in pairs], "doc_qa", meta))
    return data


_CLOCK_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def parse_watch_time(watch_time: str) -> tuple[int, int, int]:
    """pixmo-clocks' watch_time ("003_2020-06-28T08:15:30") -> (hour 0-23, minute, second). ValueError if unreadable."""
    found = _CLOCK_TIME.findall(str(watch_time).split("T")[-1])
    if not found:
        raise ValueError(f"no H:MM(:SS) time in watch_time {watch_time!r}")
    hour, minute, second = found[-1]
    return int(hour), int(minute), int(second or 0)


def clock_answer(hour: int, minute: int, second: int, time_format: str = "Without AM/PM",
                 shows_seconds: bool = True) -> str:
    """The time as pixmo-clocks' ``text`` writes it: a 12-hour clock without a leading zero (0 and 12 -> 12),
    ":SS" only when the watch shows seconds, " AM"/" PM" only for "With AM/PM" ("8:15:30", "12:09", "11:57:04 PM").
    A format naming 24 hours keeps 0-23 (a guess: the card lists 3 formats and the viewer shows only these two)."""
    twelve = "24" not in time_format
    h = (hour % 12 or 12) if twelve else hour
    text = f"{h}:{minute:02d}" + (f":{second:02d}" if shows_seconds else "")
    if time_format.strip().lower() == "with am/pm":
        text += " AM" if hour < 12 else " PM"
    return text


def clock_image_name(example_id: str) -> str:
    """The file name of a clock row's rendered image: example_id with every character outside [A-Za-z0-9._-]
    replaced by "_" (ids hold "/" and ":"), plus ".png"."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", example_id) + ".png"


def _clock_image(row: dict, image_dir: Path | None) -> np.ndarray | Path | None:
    if row.get("image") is not None:
        return _row_image(row["image"])
    if image_dir is None:
        return None
    stem = image_dir / clock_image_name(row["example_id"])
    return next((p for p in (stem, stem.with_suffix(".jpg")) if p.is_file()), None)


def load_pixmo_clocks(source: str | Path = HUB_IDS["pixmo-clocks"], split: str = "train", *,
                      image_dir: str | Path | None = None, require_image: bool = True,
                      limit: int | None = None) -> PixmoDataset:
    """pixmo-clocks (example_id, watchface_id, watchface_name, watch_time, time_format, shows_seconds, hour_visible,
    minute_visible, second_visible, text) -> Message("What time is being shown?", time, "clocks").

    The Hub has no images: a row's image is its ``image`` column when the file has one, else
    ``image_dir / clock_image_name(example_id)`` (.png or .jpg); image_dir defaults to the ``images`` folder beside a
    local source. Rows without an image are skipped (``require_image``) or kept with image None. The answer is the
    row's ``text``, else ``clock_answer``. meta annotations, as synthetic clocks have them: hour (as the answer writes
    it, 1-12 on a 12-hour watch), minute, second (None when the watch shows none), face, plus hour24 and time_format."""
    rows = _limited(load_rows(source, split, required=("example_id", "watch_time", "time_format")), limit)
    if image_dir is None and Path(source).exists():
        local = Path(source) if Path(source).is_dir() else Path(source).parent
        image_dir = local / "images" if (local / "images").is_dir() else None
    data = PixmoDataset("pixmo-clocks", str(source), split, [], n_rows=len(rows))
    for row in rows:
        try:
            hour, minute, second = parse_watch_time(row["watch_time"])
        except ValueError:
            data.skipped["unreadable watch_time"] += 1
            continue
        image = _clock_image(row, Path(image_dir) if image_dir is not None else None)
        if image is None and require_image:
            data.skipped["no image"] += 1
            continue
        shows_seconds = bool(row.get("shows_seconds", True))
        answer = row.get("text") or clock_answer(hour, minute, second, row["time_format"], shows_seconds)
        shown_hour = hour if "24" in row["time_format"] else hour % 12 or 12
        meta = {"example_id": row["example_id"], "annotations": [{
            "hour": shown_hour, "minute": minute, "second": second if shows_seconds else None, "hour24": hour,
            "time_format": row["time_format"], "face": row.get("watchface_name"), "answer": answer}]}
        data.examples.append(Example(image, [[Message(CLOCK_PROMPT, answer, "clocks")]], "clocks", meta))
    return data


LOADERS: dict[str, Callable[..., PixmoDataset]] = {
    "pixmo-cap": load_pixmo_cap, "pixmo-points": load_pixmo_points, "pixmo-points-eval": load_pixmo_points_eval,
    "pixmo-count": load_pixmo_count, "pixmo-docs": load_pixmo_docs, "pixmo-clocks": load_pixmo_clocks,
    "pixmo-ask-model-anything": load_pixmo_ask_model_anything, "pixmo-cap-qa": load_pixmo_cap_qa,
    "pixmo-point-explanations": load_pixmo_point_explanations,
}


def load_pixmo(name: str, source: str | Path | None = None, **kwargs: Any) -> PixmoDataset:
    """Any PixMo dataset by name ("pixmo-points", ...): its loader with ``source`` (default: the Hub id)."""
    if name not in LOADERS:
        raise ValueError(f"unknown PixMo dataset {name!r}; choose from {sorted(LOADERS)}")
    return LOADERS[name](HUB_IDS[name] if source is None else source, **kwargs)

"""Running a planned batch: each input decoded (ahead, in background threads), separated and its
outputs published, or its failure reported while the batch goes on."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .bag import pick_outputs
from .batch import Inputs, already_done, record_path, record_text, refused_inputs, safe_name, stem_paths, track_names
from .errors import StemsplitError
from .files import remove_stale, sha256_of

if TYPE_CHECKING:
    from .audio import Encoding, Song
    from .bag import Bag
    from .chain import Chain
    from .separation import Decided

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
STEM_FILE_TEMPLATE = "{track}.{ext}"  # the default for --format stem: one file per song
STEM_FILE = "stems"  # the {stem} field, and the output's name, of a stem file


class Reporter(Protocol):
    """Where a run tells of its progress: human lines, a progress display, one result per input."""

    def info(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def progress(self) -> AbstractContextManager[Any]: ...

    def result(self, result: Result) -> None: ...


@dataclass
class Result:
    input: str
    status: str  # done, skipped or failed
    outputs: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0  # seconds of audio
    seconds: float = 0.0  # time taken
    error: str | None = None
    steps: list[dict[str, str | None]] = field(default_factory=list)  # a chain's: each step's model and stem

    def json(self) -> str:
        """One JSON line (`steps` only for a chain); names holding bytes that are not UTF-8 are written as
        \\udcXX escapes, which json.loads turns back into the str that os.fsencode turns back into those bytes."""
        fields = {key: value for key, value in self.__dict__.items() if key != "steps" or value}
        text = json.dumps(fields, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(fields)
        return text


@dataclass(frozen=True)
class Options:
    """How each input is separated and written."""

    decided: Decided
    encoding: Encoding  # its rate, channels and tags are each song's
    jobs: int
    other_method: str


@dataclass(frozen=True)
class Request:
    """What to separate and where its outputs go."""

    inputs: tuple[str, ...]
    out: Path
    template: str
    names_wanted: tuple[tuple[str, ...], str | None]  # --stems, --two-stems
    shard: tuple[int, int]
    skip_existing: bool
    to_stdout: str | None


# Planning

@dataclass(frozen=True)
class Plan:
    """This shard's inputs, in order, with the output paths of each; which are refused and which to do."""

    paths: dict[str, dict[str, Path]]
    refusals: dict[str, str]
    todo: list[str]
    identity: tuple


def plan_outputs(request: Request, inputs: Inputs, bag: Bag, names: list[str], options: Options,
                 model_out: Path) -> Plan:
    ext = "stem.mp4" if options.encoding.format == "stem" else options.encoding.format
    template = request.template
    if options.encoding.format == "stem" and template == DEFAULT_TEMPLATE:
        template = STEM_FILE_TEMPLATE
    files = shard_of(inputs.names, request.shard)
    tracks = track_names(inputs.names)  # decided on every shard's inputs, so all shards agree
    paths = {name: stem_paths(model_out, template, name, safe_name(bag.name), names, ext, tracks[name])
             for name in inputs.names}
    refusals = {**refused_inputs(paths, model_out), **inputs.refusals}
    paths = {name: paths[name] for name in files}
    remove_stale({path.parent for stems in paths.values() for path in stems.values()})
    identity = (bag.identity, output_settings(options, names))
    todo = [name for name, stems in paths.items()
            if name not in refusals and not (request.skip_existing and already_done(name, *identity, stems))]
    return Plan(paths, refusals, todo, identity)


def shard_of(names: list[str], shard: tuple[int, int]) -> list[str]:
    index, count = shard
    return names[index::count]


def output_settings(options: Options, stems: list[str]) -> dict[str, object]:
    """The settings that change the stems written, for their identity record."""
    settings = options.decided.settings
    return {"shifts": settings.shifts, "overlap": settings.overlap, "segment": settings.segment,
            "precision": settings.precision, "stems": stems, "format": options.encoding.format,
            "bit_depth": options.encoding.bit_depth, "clip_mode": options.encoding.clip_mode,
            "other_method": options.other_method, "stem_codec": options.encoding.stem_codec}


# Decoding ahead

class Prefetcher:
    """Decodes upcoming inputs in background threads while the current one is separated."""

    def __init__(self, inputs: list[str], bag: Bag, jobs: int):
        from .audio import open_song

        self.pool = ThreadPoolExecutor(max(jobs, 1))
        self.pending: dict[int, Future] = {}
        self.inputs, self.jobs = inputs, jobs
        self.cancelled = threading.Event()
        self.opener = lambda name: open_song(name, bag.samplerate, bag.audio_channels, cancelled=self.cancelled)

    def _open_now(self, index: int) -> tuple[ExitStack, Song]:
        with ExitStack() as stack:
            song = stack.enter_context(self.opener(self.inputs[index]))
            return stack.pop_all(), song

    def _start(self, index: int) -> None:
        if index < len(self.inputs) and index not in self.pending and self.inputs[index] != "-":
            self.pending[index] = self.pool.submit(self._open_now, index)

    def open(self, index: int) -> tuple[ExitStack, Song]:
        """Input `index` opened as a song, with the stack that closes it; queue the next ones."""
        for ahead in range(index + 1, index + 1 + self.jobs):
            self._start(ahead)
        future = self.pending.pop(index, None)
        return self._open_now(index) if future is None else future.result()

    def close(self) -> None:
        self.cancelled.set()  # decodings under way stop at their next block and remove their files
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)
        for future in self.pending.values():
            if not future.cancelled() and future.exception() is None:
                stack, _ = future.result()
                stack.close()


# Separating

@dataclass(frozen=True)
class Job:
    index: int  # among the inputs to separate
    input_name: str
    paths: dict[str, Path]
    identity: tuple[str, dict] | None  # model and settings, recorded beside the stems; None: no record


def stem_tags(tags: dict[str, str], stem: str) -> dict[str, str]:
    title = tags.get("title")
    return {**tags, "title": f"{title} ({stem})" if title else stem}


class Bars:
    """The progress bars of one song: one for a model, one per step of a chain (named by `step`), removed at the end."""

    def __init__(self, progress: Any, title: str):
        self.progress, self.title, self.tasks = progress, title, []

    def __call__(self, step: str | None = None) -> Callable[[int, int], None]:
        task = self.progress.add_task(self.title if step is None else f"{self.title}: {step}", total=None)
        self.tasks.append(task)
        return lambda done, total: self.progress.update(task, completed=done, total=total)

    def remove(self) -> None:
        for task in self.tasks:
            self.progress.remove_task(task)


def separate_song(title: str, song: Song, bag: Bag | Chain, paths: dict[str, Path], options: Options,
                  record: tuple[Path, str] | None, progress: Any) -> None:
    """Run the separation of an opened song and publish its outputs, all or nothing, and then its `record`."""
    from .audio import open_stem_writers
    from .chain import separated
    from .separation import separate_stream

    names = list(paths)
    bars = Bars(progress, title)
    try:
        encoding = replace(options.encoding, rate=song.info.sample_rate, channels=song.channels, tags=song.info.tags)
        if encoding.format == "stem":
            from .stemfile import write_stem_file

            blocks = separate_stream(bag, song, options.decided, progress=bars())
            write_stem_file(paths[STEM_FILE], song, blocks, bag, encoding, jobs=options.jobs, record=record)
        else:
            outputs = {path: replace(encoding, tags=stem_tags(song.info.tags, name)) for name, path in paths.items()}
            with open_stem_writers(outputs, frames=song.info.frames, source_rate=song.info.sample_rate,
                                   jobs=options.jobs, record=record) as writers:
                for block in separated(bag, song, options.decided, bars):
                    writers.write([output.numpy() for output in pick_outputs(block, bag.stems, names)])
    finally:
        bars.remove()


def process(job: Job, prefetch: Prefetcher, bag: Bag, options: Options, progress: Any,
            reporter: Reporter) -> Result:
    """Separate one input; its identity is recorded beside its stems for --skip-existing."""
    from .chain import step_records

    started = time.perf_counter()
    stack, song = prefetch.open(job.index)
    with stack:
        for notice in song.info.notices:
            reporter.info(f"  note: {notice}")
        record = None
        if job.identity is not None and job.input_name != "-":
            record = record_path(job.paths), record_text(sha256_of(Path(job.input_name)), *job.identity,
                                                          job.paths)
        separate_song(Path(job.input_name).name, song, bag, job.paths, options, record, progress)
    return Result(job.input_name, "done", {stem: str(p) for stem, p in job.paths.items()},
                  song.info.frames / song.info.sample_rate, time.perf_counter() - started,
                  steps=step_records(bag))


def attempt(job: Job, prefetch: Prefetcher, bag: Bag, options: Options, progress: Any, reporter: Reporter) -> Result:
    """Separate one input; its failure is its own, reported, and the batch goes on."""
    try:
        return process(job, prefetch, bag, options, progress, reporter)
    except (StemsplitError, RuntimeError) as exc:
        message = input_failure(job.input_name, exc)
        reporter.error(message)
        return Result(job.input_name, "failed", error=message)


def input_failure(input_name: str, exc: Exception) -> str:
    """The one-line message of an error that fails this input alone; other errors are raised again."""
    if isinstance(exc, StemsplitError) and exc.exit_code == 1:
        return str(exc)
    if isinstance(exc, RuntimeError):  # e.g. out of memory on a GPU
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"separating {input_name} failed: {reason}; try a shorter --segment, "
                "--batch-size 1 or -d cpu")
    raise exc


def separate_planned(reporter: Reporter, plan: Plan, bag: Bag, names: list[str], options: Options,
                     recorded: bool) -> list[Result]:
    """Each planned input in turn: refused, skipped or separated, reported as it ends. `recorded`: whether
    identity records are written beside the outputs."""
    from .chain import step_records

    results: list[Result] = []
    todo_index = {name: index for index, name in enumerate(plan.todo)}  # a library can hold 100 000 inputs
    prefetch = Prefetcher(plan.todo, bag, options.jobs)
    try:
        with reporter.progress() as progress:
            for position, (input_name, paths) in enumerate(plan.paths.items(), 1):
                if len(plan.paths) > 1:
                    reporter.info(f"[{position}/{len(plan.paths)}] {input_name}")
                if input_name in plan.refusals:
                    reporter.error(plan.refusals[input_name])
                    result = Result(input_name, "failed", error=plan.refusals[input_name])
                elif input_name not in todo_index:
                    result = Result(input_name, "skipped", {s: str(p) for s, p in paths.items()},
                                    steps=step_records(bag))
                else:
                    job = Job(todo_index[input_name], input_name, paths, plan.identity if recorded else None)
                    result = attempt(job, prefetch, bag, options, progress, reporter)
                results.append(result)
                reporter.result(result)
    finally:
        prefetch.close()
    return results

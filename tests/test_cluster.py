"""The README's Dask recipe, run as written on a local cluster of 2 worker processes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
from dask.distributed import Client, LocalCluster

import stemsplit

README = Path(__file__).resolve().parents[1] / "README.md"
RECIPE_MARKER = "<!-- cluster recipe: tests/test_cluster.py runs this block as it is -->"


def readme_recipe() -> dict:
    """The namespace of the README's cluster recipe, executed as a module that is not `__main__`."""
    text = README.read_text(encoding="utf-8")
    code = re.match(r"\s*```python\n(.*?)```", text[text.index(RECIPE_MARKER) + len(RECIPE_MARKER):], re.S)[1]
    namespace = {"__name__": "readme_cluster_recipe"}  # not importable: Dask ships its code by value
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def count_model_loads() -> None:
    """On a worker: count every weight loading the API does from now on."""
    import stemsplit.api

    load = stemsplit.api.load_bag

    def counted(*args, **kwargs):
        counted.calls += 1
        return load(*args, **kwargs)

    counted.calls = 0
    stemsplit.api.load_bag = counted


def model_loads_and_threads() -> tuple[int, int]:
    import torch

    import stemsplit.api

    return stemsplit.api.load_bag.calls, torch.get_num_threads()


def test_readme_recipe_separates_on_two_workers_with_one_model_load_each(tmp_path, tiny_repo):
    rng = np.random.default_rng(5)
    inputs = []
    for index, (rate, channels) in enumerate([(44100, 2), (48000, 2), (22050, 1)]):
        path = tmp_path / f"song{index}.wav"
        sf.write(path, (0.2 * rng.standard_normal((int(0.6 * rate), channels))).astype(np.float32), rate)
        inputs.append(str(path))
    recipe = readme_recipe()

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        client.run(count_model_loads)
        outputs = recipe["split_all"](client, inputs, str(tmp_path / "stems"), model="tiny", threads=2,
                                      repo=str(tiny_repo), device="cpu")
        workers = client.run(model_loads_and_threads)
    assert list(workers.values()) == [(1, 2), (1, 2)]  # one model load per worker, torch on 2 threads

    direct = stemsplit.load_model("tiny", repo=tiny_repo, device="cpu")
    for path, written in zip(inputs, outputs):
        expected, rate = direct.separate(path)
        info = sf.info(path)
        assert sorted(written) == sorted(expected) == ["bass", "drums", "other", "vocals"]
        for name, stem in expected.items():
            assert written[name] == str(tmp_path / "stems" / Path(path).stem / f"{name}.wav")
            audio, written_rate = sf.read(written[name], dtype="float32", always_2d=True)
            assert written_rate == rate == info.samplerate and audio.shape == (info.frames, 2)
            np.testing.assert_allclose(audio.T, stem, atol=1e-5)  # worker threads may round differently

"""Run by spleeter 2.4.2's own environment (TensorFlow 2.12.1), not by ours.

    python spleeter_oracle.py {2,4,5}stems song.npy out_dir

Builds spleeter's graph for its embedded configuration with random weights (every kernel,
bias and batch-normalisation statistic drawn at random), saves them as a TensorFlow
checkpoint that spleeter's Separator then restores and runs on the song (samples, 2), and
writes out_dir/oracle.npz: every variable under its TensorFlow name, the masks of each
instrument (`mask/<instrument>`, from the same graph) and the Separator's stems
(`stem/<instrument>`).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from spleeter.model import EstimatorSpecBuilder  # noqa: E402
from spleeter.separator import Separator  # noqa: E402
from spleeter.utils.configuration import load_configuration  # noqa: E402


def randomised(variable, rng):
    """A random value for a variable, kept in a range that keeps batch normalisation sane."""
    shape = variable.shape.as_list()
    name = variable.name
    if "moving_variance" in name or "gamma" in name:
        return rng.uniform(0.5, 1.5, shape)
    if "kernel" in name:
        fan_in = np.prod(shape[:-1])
        return rng.uniform(-1, 1, shape) * np.sqrt(6 / fan_in)
    return rng.normal(0, 0.1, shape)


def build_and_save(params, waveform, model_dir, rng):
    graph = tf.Graph()
    with graph.as_default():
        features = {"waveform": tf.constant(waveform, dtype=tf.float32)}
        builder = EstimatorSpecBuilder(features, params)
        masks = builder.masks
        variables = tf.compat.v1.global_variables()
        tf.compat.v1.train.get_or_create_global_step()  # the Estimator restores it too
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for variable in variables:
                variable.load(randomised(variable, rng).astype(np.float32), session)
            values = {variable.name: session.run(variable) for variable in variables}
            mask_values = session.run(masks)
            tf.compat.v1.train.Saver().save(session, str(model_dir / "model"))
    (model_dir / ".probe").write_text("OK")
    return values, mask_values


def main(name, song, out):
    out = Path(out)
    waveform = np.load(song).astype(np.float32)
    params = load_configuration(f"spleeter:{name}")
    model_dir = out / name
    model_dir.mkdir(parents=True)
    params["model_dir"] = str(model_dir.resolve())
    values, masks = build_and_save(params, waveform, model_dir, np.random.default_rng(0))
    config = out / "params.json"
    config.write_text(json.dumps(params))
    stems = Separator(str(config), multiprocess=False).separate(waveform)
    arrays = {f"variable/{key}": value for key, value in values.items()}
    arrays.update({f"mask/{key}": value for key, value in masks.items()})
    arrays.update({f"stem/{key}": value for key, value in stems.items()})
    np.savez(out / "oracle.npz", **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])

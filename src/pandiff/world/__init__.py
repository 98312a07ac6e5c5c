"""The built-in world: a synthetic panoptic dataset with exact captions, and what checks models on it.

* :mod:`~pandiff.world.generator`: scene specs, the category table, ``pandiff make-world``'s
  writer and the world's vocabulary.
* :mod:`~pandiff.world.drawing` / :mod:`~pandiff.world.captions`: a spec's picture and map, its captions.
* :mod:`~pandiff.world.checks`: prompt adherence and colour accuracy against the scene specs.
* :mod:`~pandiff.world.judge` / :mod:`~pandiff.world.judge_training`: the judge segmentation
  network (``pandiff train-judge``) and the downstream proof; :mod:`~pandiff.world.judged`:
  adherence judged on the generated image.
* :mod:`~pandiff.world.codec_training`: the world's small image autoencoder (``pandiff train-codec``).

The core (maps, encoders, model, diffusion, pipeline, training, generic metrics) does not depend
on this package except where it names the world on purpose (the bundled model's vocabulary).
"""

"""Data: image data sets, frozen backbones, the feature cache and the synthetic pools.

From images to arrays: :mod:`~alkit.data.datasets` (folders and archives of images, their labels),
:mod:`~alkit.data.backbones` (frozen feature extractors), :mod:`~alkit.data.features` (batched,
resumable, cached extraction, split among ranks by :mod:`~alkit.data.distributed`),
:mod:`~alkit.data.images` (pixels for the strategies and trainers that read them),
:mod:`~alkit.data.synthetic` and :mod:`~alkit.data.imagenet_pool` (labelled stand-ins), and
:mod:`~alkit.data.labelling` (the files a practitioner labels).  These modules import nothing of
alkit above ``io`` and ``checks``.
"""
